/* main.c — the `sluice` command: dispatches to one subcommand per job (cli/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}

/* cmd_report.c — `sluice report`. Not built yet: the command says so and exits 2. */
#include "cli/cli.h"

int cmd_report(int argc, char **argv)
{
    (void)argc;
    return cli_fail(argv[0], "not supported yet in this build");
}

/* cmd_sim.c — `sluice sim`. Not built yet: the command says so and exits 2. */
#include "cli/cli.h"

int cmd_sim(int argc, char **argv)
{
    (void)argc;
    return cli_fail(argv[0], "not supported yet in this build");
}

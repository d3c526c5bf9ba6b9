/* ic_cdp_cli.h: imgrestore --at (the CDP journal, FORMAT.md section 15). */
#ifndef IC_CDP_CLI_H
#define IC_CDP_CLI_H

#include "ic_cli.h"

/* Run `imgrestore --at TIME CHAIN DEST`, or with at NULL `imgrestore --checkpoints
 * CHAIN`, once the options are parsed; returns the exit status. */
int ic_cdp_restore_main(const char *at, const struct ic_cli *cli, int argc, char **argv);

#endif

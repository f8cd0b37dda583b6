/* Detection-training commands (src/cmd/evalmap.c): what eval dispatches to for --map. */
#ifndef CNNB_CMD_BOXCMD_H
#define CNNB_CMD_BOXCMD_H

/* cnn-batch eval MODEL.cfg --weights W --data IMGS.h5 --map: argv as cnnb_cmd_eval's. */
int cnnb_cmd_eval_map(int argc, char **argv);

#endif

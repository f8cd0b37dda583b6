/* What the image commands (filter, style, predict --sliding/--layer) share. */
#ifndef CNNB_CMD_IMGCMD_H
#define CNNB_CMD_IMGCMD_H

#include "cnnb/dist.h"

/* Creates the --png directory on rank 0 (an existing one is fine); collective. */
int cnnb_cmd_make_png_dir(const cnnb_dist *d, const char *dir);
/* predict with --sliding or --layer N (src/cmd/sliding.c); argv as cnnb_cmd_predict's. */
int cnnb_cmd_predict_grid(int argc, char **argv);

#endif

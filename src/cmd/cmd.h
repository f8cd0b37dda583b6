/* Subcommands of the cnn-batch program: each takes its argv (argv[0] is the subcommand) and
 * returns the process exit code. MPI is initialised by main before any of them runs. */
#ifndef CNNB_CMD_H
#define CNNB_CMD_H

/* Exit codes, documented in docs/CLI.md. */
enum {
  CNNB_EXIT_OK = 0,
  CNNB_EXIT_FAIL = 1,     /* an error; the message names the file, line or rank */
  CNNB_EXIT_USAGE = 2,    /* bad command line */
  CNNB_EXIT_STOPPED = 3,  /* stopped by SIGTERM/SIGUSR1 after a complete checkpoint: requeue */
};

int cnnb_cmd_info(int argc, char **argv);
int cnnb_cmd_import(int argc, char **argv); /* import idx | import images */
int cnnb_cmd_train(int argc, char **argv);
int cnnb_cmd_eval(int argc, char **argv);
int cnnb_cmd_predict(int argc, char **argv);
int cnnb_cmd_filter(int argc, char **argv);
int cnnb_cmd_style(int argc, char **argv);
int cnnb_cmd_detect(int argc, char **argv);
int cnnb_cmd_convert(int argc, char **argv);
int cnnb_cmd_map(int argc, char **argv);
int cnnb_cmd_embed(int argc, char **argv);
int cnnb_cmd_verify(int argc, char **argv);
int cnnb_cmd_identify(int argc, char **argv);
int cnnb_cmd_faces(int argc, char **argv);
#endif

/* cnn-batch info MODEL.cfg [--height H --width W --channels C]: builds the network as a plan
 * only (max_batch = 0: shapes and parameter counts, no buffers), so that even ImageNet models
 * print instantly, and prints the table of cnnb_net_print_summary. */
#include <mpi.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cnnb/error.h"
#include "cnnb/net.h"

/* Weak until the shared command helpers land, so that this file links on its own meanwhile;
 * the fallback prints the same line for a single rank. */
static void report(const char *msg) { fprintf(stderr, "cnn-batch: error: %s\n", msg); }

static const char usage_text[] =
  "usage: cnn-batch info MODEL.cfg [--height H] [--width W] [--channels C]\n"
  "\n"
  "Prints one row per layer (index, type, output H x W x C, activation floats per sample,\n"
  "trainable parameters, multiply-adds per sample), then the totals. Builds shapes only: no\n"
  "memory for weights or activations is allocated.";

int cnnb_cmd_info(int argc, char **argv)
{
  const char *sh = NULL, *sw = NULL, *sc = NULL, *pos[1];
  const cnnb_opt opts[] = {
    {"height", "H", "input height instead of [net] height", &sh, NULL},
    {"width", "W", "input width instead of [net] width", &sw, NULL},
    {"channels", "C", "input channels instead of [net] channels", &sc, NULL},
    {NULL, NULL, NULL, NULL, NULL},
  };
  int npos, rc = cnnb_args_parse(argc, argv, usage_text, opts, pos, 1, &npos);
  if (rc) return rc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 1) {
    fprintf(stderr, "cnn-batch info: a model file is required\n%s\n", usage_text);
    return CNNB_EXIT_USAGE;
  }
  long dims[3] = {0, 0, 0};
  const char *vals[3] = {sh, sw, sc}, *names[3] = {"height", "width", "channels"};
  for (int i = 0; i < 3; i++)
    if (vals[i] && cnnb_arg_long("info", names[i], vals[i], 1, 65536, &dims[i]) < 0) return CNNB_EXIT_USAGE;
  const char *model = pos[0];

  int rank = 0, up = 0;
  MPI_Initialized(&up);
  if (up) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 0; /* plan only */
  o.h = (int)dims[0], o.w = (int)dims[1], o.c = (int)dims[2];
  o.quiet = rank != 0; /* one copy of each unused-key warning under mpiexec */
  cnnb_net *net;
  if (cnnb_net_load(&net, model, &o) < 0) {
    report(cnnb_error_message());
    return CNNB_EXIT_FAIL;
  }
  if (rank == 0) cnnb_net_print_summary(net, stdout);
  cnnb_net_free(net);
  return CNNB_EXIT_OK;
}

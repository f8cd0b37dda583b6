/* cnn-batch: subcommand dispatch only. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *help;
  int serial; /* rank 0 does all the work: runs without MPI when no MPI launcher started it */
} cmds[] = {
  {"info", cnnb_cmd_info, "print a model's layers, shapes, parameters and multiply-adds", 1},
  {"import", cnnb_cmd_import, "IDX files (Fashion-MNIST, MNIST) or a directory of photos into HDF5", 1},
  {"train", cnnb_cmd_train, "train a model data-parallel over MPI ranks", 0},
  {"eval", cnnb_cmd_eval, "loss and accuracy of a checkpoint on a dataset", 0},
  {"predict", cnnb_cmd_predict, "write a model's outputs for every image into HDF5", 0},
  {"filter", cnnb_cmd_filter, "apply an edge filter or kernel file to every image (depthwise convolution)", 0},
  {"style", cnnb_cmd_style, "neural style transfer of every content image towards a style image", 0},
  {"detect", cnnb_cmd_detect, "YOLO boxes (Darknet cfg and weights) for every image of an image set", 0},
  {"convert", cnnb_cmd_convert, "Darknet .weights <-> checkpoints; seeded .weights (--init)", 1},
  {"map", cnnb_cmd_map, "mean average precision of detections against an image set's truth boxes", 1},
  {"embed", cnnb_cmd_embed, "an embedding (descriptor) for every crop of a dataset, all ranks writing one file", 0},
  {"verify", cnnb_cmd_verify, "1:1 verification of embedding pairs: LFW 10-fold accuracy, VAL at FAR", 0},
  {"identify", cnnb_cmd_identify, "1:K search of probe embeddings in a gallery (sgemm, top-K, open set)", 0},
  {"faces", cnnb_cmd_faces, "faces, 68 landmarks and 128-d descriptors (face-api.js models) of every photo", 0},
};

static void usage(FILE *f)
{
  fprintf(f, "usage: cnn-batch COMMAND [options]   (cnn-batch COMMAND --help for its options)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].help);
}

/* An MPI launcher (mpirun/mpiexec, srun with PMI or PMIx) started this process. */
static int launched_by_mpi(void)
{
  static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
    if (getenv(vars[i])) return 1;
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? CNNB_EXIT_USAGE : 0;
  }
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    if (strcmp(argv[1], cmds[i].name)) continue;
    /* MPI_Init costs ~0.3 s here (Open MPI probes its transports and starts a helper daemon
     * for a process not started by mpirun): a serial command started by hand skips it. */
    const int mpi = !cmds[i].serial || launched_by_mpi();
    int provided;
    if (mpi) MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int rc = cmds[i].fn(argc - 1, argv + 1);
    if (mpi) MPI_Finalize();
    return rc;
  }
  fprintf(stderr, "cnn-batch: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return CNNB_EXIT_USAGE;
}

/* cnn-batch: subcommand dispatch only. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *help;
} cmds[] = {
  {"info", cnnb_cmd_info, "print a model's layers, shapes, parameters and multiply-adds"},
  {"import", cnnb_cmd_import, "IDX files (Fashion-MNIST, MNIST) or a directory of photos into HDF5"},
  {"train", cnnb_cmd_train, "train a model data-parallel over MPI ranks"},
  {"eval", cnnb_cmd_eval, "loss and accuracy of a checkpoint on a dataset"},
  {"predict", cnnb_cmd_predict, "write a model's outputs for every image into HDF5"},
  {"filter", cnnb_cmd_filter, "apply an edge filter or kernel file to every image (depthwise convolution)"},
  {"style", cnnb_cmd_style, "neural style transfer of every content image towards a style image"},
  {"detect", cnnb_cmd_detect, "YOLO boxes (Darknet cfg and weights) for every image of an image set"},
  {"convert", cnnb_cmd_convert, "Darknet .weights <-> checkpoints; seeded .weights (--init)"},
  {"map", cnnb_cmd_map, "mean average precision of detections against an image set's truth boxes"},
  {"embed", cnnb_cmd_embed, "an embedding (descriptor) for every crop of a dataset, all ranks writing one file"},
  {"verify", cnnb_cmd_verify, "1:1 verification of embedding pairs: LFW 10-fold accuracy, VAL at FAR"},
  {"identify", cnnb_cmd_identify, "1:K search of probe embeddings in a gallery (sgemm, top-K, open set)"},
  {"faces", cnnb_cmd_faces, "faces, 68 landmarks and 128-d descriptors (face-api.js models) of every photo"},
};

static void usage(FILE *f)
{
  fprintf(f, "usage: cnn-batch COMMAND [options]   (cnn-batch COMMAND --help for its options)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? CNNB_EXIT_USAGE : 0;
  }
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    if (strcmp(argv[1], cmds[i].name)) continue;
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int rc = cmds[i].fn(argc - 1, argv + 1);
    MPI_Finalize();
    return rc;
  }
  fprintf(stderr, "cnn-batch: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return CNNB_EXIT_USAGE;
}

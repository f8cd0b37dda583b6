/* cnn-batch import: IDX files into an HDF5 dataset file, or a directory of photos into an
 * image set (docs/FORMATS.md). Runs on rank 0; other ranks only wait for the outcome. */
#include <stdio.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/imageset.h"

static int import_idx(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch import idx --images IMAGES.idx[.gz] --labels LABELS.idx[.gz] -o OUT.h5 [--classes A,B,..]\n"
    "Writes /images (uint8 N x H x W x C) and /labels (int32 N) with per-channel mean and std attributes.";
  const char *images = NULL, *labels = NULL, *out = NULL, *classes = NULL, *limit = "0", *level = "4";
  cnnb_opt opts[] = {{"images", "FILE", "IDX images (idx3 or idx4, gzip or raw)", &images, NULL},
                     {"labels", "FILE", "IDX labels (idx1)", &labels, NULL},
                     {"output", "FILE", "HDF5 file to write (-o)", &out, NULL},
                     {"classes", "A,B,..", "class names, stored as an attribute", &classes, NULL},
                     {"limit", "N", "only the first N images", &limit, NULL},
                     {"compress", "0-9", "gzip level of the image chunks (default 4)", &level, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 1 || strcmp(pos[0], "idx") || !images || !labels || !out) {
    fprintf(stderr, "cnn-batch import: needs 'idx', --images, --labels and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  cnnb_import_opts o;
  cnnb_import_opts_init(&o);
  long lim, lev;
  if (cnnb_arg_long("import", "limit", limit, 0, 1L << 40, &lim) ||
      cnnb_arg_long("import", "compress", level, 0, 9, &lev))
    return CNNB_EXIT_USAGE;
  o.limit = lim;
  o.compress = (int)lev;
  o.class_names = classes;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  int rc = d.rank == 0 ? cnnb_import_idx(images, labels, out, &o) : 0;
  rc = cnnb_dist_agree(&d, rc);
  if (rc) {
    cnnb_job_fail(&d, "import");
    return CNNB_EXIT_FAIL;
  }
  if (d.rank == 0) printf("wrote %s\n", out);
  return CNNB_EXIT_OK;
}

static int import_images(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch import images --dir DIR -o IMGS.h5 [--compress 0-9]\n"
    "Decodes every JPEG and PNG of DIR (sorted by name) and stores them at their original size:\n"
    "/pixels, /offsets, /shapes, /paths (docs/FORMATS.md \"Image sets\"). A file that cannot be\n"
    "decoded is reported by index and path, skipped and counted.";
  const char *dir = NULL, *out = NULL, *level = "1";
  cnnb_opt opts[] = {{"dir", "DIR", "directory of .jpg/.jpeg/.png files", &dir, NULL},
                     {"output", "FILE", "HDF5 file to write (-o)", &out, NULL},
                     {"compress", "0-9", "gzip level of the pixels (default 1)", &level, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  long lev;
  if (npos != 1 || strcmp(pos[0], "images") || !dir || !out) {
    fprintf(stderr, "cnn-batch import images: needs --dir and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  if (cnnb_arg_long("import", "compress", level, 0, 9, &lev)) return CNNB_EXIT_USAGE;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  long n = 0, skipped = 0;
  int rc = d.rank == 0 ? cnnb_imageset_import_dir(dir, out, (int)lev, &n, &skipped) : 0;
  rc = cnnb_dist_agree(&d, rc);
  if (rc) {
    cnnb_job_fail(&d, "import");
    return CNNB_EXIT_FAIL;
  }
  if (d.rank == 0) printf("wrote %s: %ld images, %ld skipped\n", out, n, skipped);
  return CNNB_EXIT_OK;
}

int cnnb_cmd_import(int argc, char **argv)
{
  if (argc > 1 && !strcmp(argv[1], "images")) return import_images(argc, argv);
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: cnn-batch import idx|images [options]   (see import idx --help, import images --help)\n");
    return CNNB_EXIT_OK;
  }
  return import_idx(argc, argv);
}

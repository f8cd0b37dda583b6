/* Matching embeddings: the model hash of embedding files (SHA-256), embedding files
 * (docs/FORMATS.md "Embeddings"), Euclidean distances by sgemm with top-K selection (1:K
 * identify), and LFW-style pairs with 10-fold verification accuracy and VAL at a FAR (1:1
 * verify). Functions that can fail return 0 or a negative cnnb_status with a message naming the
 * file and line (cnnb_error_message()).
 *
 *   cnnb_embfile *g;
 *   if (cnnb_embfile_open(&g, "gallery.h5") < 0) fprintf(stderr, "%s\n", cnnb_error_message());
 *   float *e = malloc(sizeof *e * g->n * g->dim);
 *   cnnb_embfile_read(g, 0, g->n, e);
 *   cnnb_embfile_close(g);
 */
#ifndef CNNB_MATCH_H
#define CNNB_MATCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct cnnb_sha256 {
  uint32_t h[8];
  uint64_t len;           /* bytes hashed so far */
  unsigned char buf[64];  /* partial block */
  size_t nbuf;
} cnnb_sha256;

/* Uses the CPU's SHA extensions when enable and the CPU has them (the default), else the
 * portable code; returns 1 when the extensions are in use. Not thread-safe: call it before
 * hashing (tests compare both). */
int cnnb_sha256_hw(int enable);
void cnnb_sha256_init(cnnb_sha256 *s);
void cnnb_sha256_update(cnnb_sha256 *s, const void *data, size_t n);
/* Writes the 32-byte digest and, when hex != NULL, its 64 lower-case hex digits and a NUL. */
void cnnb_sha256_final(cnnb_sha256 *s, unsigned char digest[32], char *hex);
/* The model hash of embedding files: hex SHA-256 of the bytes of cfg_path followed by the bytes
 * of weights_path (one stream). hex has room for 65 chars. Errors name the unreadable file. */
int cnnb_model_hash(const char *cfg_path, const char *weights_path, char hex[65]);

/* ---- embedding files (written by `cnn-batch embed`; read here by one process) ---- */
#define CNNB_EMB_SCHEMA "cnnb-embeddings"

typedef struct cnnb_embfile {
  char *path;
  long n;               /* rows */
  int dim;              /* D */
  char model_hash[65];  /* "" when the file has none */
  int has_labels, has_names, has_ids;
  long long h5file, h5emb; /* HDF5 ids (hid_t) of the file and /embeddings */
} cnnb_embfile;

/* Opens PATH read-only: /embeddings (N x D float), root attributes complete=1 and dim = D are
 * required (an incomplete file is an error naming it). */
int cnnb_embfile_open(cnnb_embfile **out, const char *path);
void cnnb_embfile_close(cnnb_embfile *f);
/* Rows [row0, row0 + n) of /embeddings into x (n x dim floats). */
int cnnb_embfile_read(cnnb_embfile *f, long row0, long n, float *x);
/* Rows [row0, row0 + n) of /labels (any integer type). */
int cnnb_embfile_labels(cnnb_embfile *f, long row0, long n, long long *labels);
/* Every row's identity name: /names[row] when present, else the decimal /labels[row]; an array
 * of n malloc'ed strings (free with cnnb_match_free_strs). Needs /names or /labels. */
int cnnb_embfile_identities(cnnb_embfile *f, char ***names);
void cnnb_match_free_strs(char **s, long n);

/* ---- distances and top-K ---- */
/* out[i*nb + j] = ||a_i - b_j|| (Euclidean) for na rows of a and nb rows of b, d columns each,
 * by one sgemm: sqrt(max(0, ||a||^2 + ||b||^2 - 2 a.b)). an, bn: squared norms (cnnb_match_sqnorms). */
void cnnb_match_sqnorms(const float *a, long n, int d, float *out);
void cnnb_match_dist(const float *a, const float *an, long na, const float *b, const float *bn, long nb, int d,
                     float *out);

/* A candidate match: distance and gallery row. Lists are ordered by distance, then row. */
typedef struct cnnb_match_cand {
  float dist;
  long long row;
} cnnb_match_cand;
/* Inserts (dist, row) into list (count entries, at most k, ordered) when it belongs to the k
 * best; returns the new count. */
int cnnb_match_topk_insert(cnnb_match_cand *list, int count, int k, float dist, long long row);

/* ---- 1:1 verification over LFW pairs ---- */
typedef struct cnnb_pairs {
  long n;          /* pairs: folds x 2 x per_fold */
  int folds, per_fold;
  long *a, *b;     /* the two rows of each pair */
  int *same;       /* 1 matched, 0 mismatched */
  int *fold;       /* fold of each pair, 0-based */
} cnnb_pairs;

/* Reads LFW's pairs.txt format (docs/FORMATS.md "Pairs files"): "F N", then F folds of N
 * matched lines "name i j" and N mismatched lines "name1 i name2 j". ids[row] is each row's
 * identity (cnnb_embfile_identities); image number i (1-based) is the i-th row of that identity
 * in row order. Errors name pairs_path and the line, and for an unknown name or number also
 * emb_path. */
int cnnb_pairs_load(cnnb_pairs *p, const char *pairs_path, char *const *ids, long nrows, const char *emb_path);
void cnnb_pairs_free(cnnb_pairs *p);

#define CNNB_VERIFY_MAX_FOLDS 100
typedef struct cnnb_verify_result {
  int folds;
  double fold_threshold[CNNB_VERIFY_MAX_FOLDS]; /* chosen on the other folds */
  double fold_accuracy[CNNB_VERIFY_MAX_FOLDS];  /* on the held-out fold */
  double mean, std;            /* of fold_accuracy (population standard deviation) */
  double accuracy_at;          /* all pairs, at the given threshold */
  double val, far, val_threshold; /* VAL and the FAR reached at the largest threshold whose FAR <= far_target */
} cnnb_verify_result;

/* The threshold with the best accuracy on n pairs (same if dist < threshold). Candidates: the
 * smallest distance, the midpoints between consecutive distinct distances, the largest
 * distance + 1; ties go to the smallest candidate. Returns the threshold; *acc gets its accuracy.
 * order: scratch of n longs. */
double cnnb_verify_best_threshold(const float *dist, const int *same, long n, long *order, double *acc);
/* Accuracy on the held-out fold with the threshold chosen on the others, for every fold; the
 * accuracy of all pairs at threshold; VAL/FAR over all pairs at far_target. */
int cnnb_verify_eval(const cnnb_pairs *p, const float *dist, double threshold, double far_target,
                     cnnb_verify_result *r);

#ifdef __cplusplus
}
#endif
#endif

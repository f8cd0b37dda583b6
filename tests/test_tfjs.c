/* TF.js weights manifests (src/io/tfjs.c) and the strict JSON reader under them (src/io/json.c):
 * a synthetic manifest written here (float32, uint8- and uint16-quantized tensors over two groups,
 * one tensor straddling two shards; a plain, a separable with channel multiplier 2, a
 * scale-folded convolution and two fully connected units) round-trips through
 * cnnb_tfjs_convert into a checkpoint whose parameters equal the values and layout computed here
 * independently; every malformed input gives an error naming the file and the tensor, and
 * leaves no output file. Runs as one MPI process (the HDF5 library is the MPI flavour). */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnnb/ckpt.h"
#include "cnnb/tfjs.h"
#include "cnnb_test.h"
#include "io/json.h"

/* ---- JSON ---------------------------------------------------------------------------------- */

static void test_json_values(void)
{
  const char *t = " {\"a\": [1, -2.5e2, 0.125, true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\\\"\","
                  " \"o\": {}, \"e\": [], \"a\": 3}\n";
  cnnb_json *v = NULL;
  int rc = cnnb_json_parse(&v, t, strlen(t), "t.json");
  if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_FATAL(rc == 0);
  CU_ASSERT_EQUAL(v->type, CNNB_JSON_OBJECT);
  CNNB_ASSERT_EQ_INT(v->n, 5);
  const cnnb_json *a = &v->items[0];
  CU_ASSERT_EQUAL(a->type, CNNB_JSON_ARRAY);
  CNNB_ASSERT_EQ_INT(a->n, 6);
  CNNB_ASSERT_NEAR(a->items[1].num, -250.0, 0);
  CNNB_ASSERT_NEAR(a->items[2].num, 0.125, 0);
  CU_ASSERT_EQUAL(a->items[3].type, CNNB_JSON_TRUE);
  CU_ASSERT_EQUAL(a->items[5].type, CNNB_JSON_NULL);
  /* the last of a repeated key wins */
  CNNB_ASSERT_NEAR(cnnb_json_get(v, "a")->num, 3.0, 0);
  const cnnb_json *s = cnnb_json_get(v, "s");
  CU_ASSERT_STRING_EQUAL(s->str, "x\xC3\xA9\xF0\x9F\x98\x80\n\"");
  CNNB_ASSERT_EQ_INT(s->len, 9);
  CU_ASSERT_PTR_NULL(cnnb_json_get(v, "missing"));
  CNNB_ASSERT_EQ_INT(cnnb_json_get(v, "o")->n, 0);
  cnnb_json_free(v);
}

static void expect_json_error(const char *text, const char *where)
{
  cnnb_json *v = NULL;
  int rc = cnnb_json_parse(&v, text, strlen(text), "bad.json");
  CU_ASSERT(rc == CNNB_EIO);
  CU_ASSERT_PTR_NULL(v);
  if (!strstr(cnnb_error_message(), where))
    fprintf(stderr, "\n  '%s': message '%s' lacks '%s'\n", text, cnnb_error_message(), where);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), where));
  cnnb_json_free(v);
}

static void test_json_errors(void)
{
  expect_json_error("[1, 2,]", "bad.json:1:7: malformed JSON: trailing comma");
  expect_json_error("{\"a\": 1,\n \"b\" 2}", "bad.json:2:6: malformed JSON: expected ':'");
  expect_json_error("[01]", "bad.json:1:3:");
  expect_json_error("[1.]", "bad.json:1:2:");
  expect_json_error("\"abc", "unterminated string");
  expect_json_error("\"a\\x\"", "bad escape");
  expect_json_error("\"\\ud800\"", "unpaired surrogate");
  expect_json_error("\"a\tb\"", "control character");
  expect_json_error("[1] x", "bad.json:1:5: malformed JSON: text after the JSON value");
  expect_json_error("[tru]", "unexpected character");
  expect_json_error("[NaN]", "bad number");
  expect_json_error("", "unexpected end");
  expect_json_error("{1: 2}", "expected a string key");
  expect_json_error("// c\n[]", "bad.json:1:1:");
  char deep[700];
  memset(deep, '[', 600);
  deep[600] = 0;
  expect_json_error(deep, "nested too deeply");
}

/* ---- a synthetic manifest ------------------------------------------------------------------ */

static const char *MODEL =
  "[net]\nheight=4\nwidth=4\nchannels=2\n"
  "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=relu\n"           /* c0: float32 */
  "[maxpool]\nsize=2\nstride=1\n"                                          /* no parameters */
  "[convolutional]\nfilters=6\ngroups=3\nsize=3\npad=1\nactivation=linear\n" /* s1 depthwise x2 */
  "[convolutional]\nfilters=4\nsize=1\nactivation=relu\n"                  /* s1 pointwise */
  "[convolutional]\nfilters=2\nsize=3\nstride=2\npad=1\nactivation=linear\n" /* r: folded scale */
  "[connected]\noutput=3\nactivation=linear\n"                             /* fc: 8 -> 3 */
  "[connected]\noutput=2\nactivation=linear\n";                            /* emb: no bias */

typedef struct tens {
  const char *name;
  int ndim, dims[4];
  const char *q; /* NULL float32, "uint8", "uint16" */
  double scale, min;
  int group;
  float *val;    /* the dequantized values */
  size_t n;
} tens;

static tens T[] = {
  {"c0/filters", 4, {3, 3, 2, 3}, NULL, 0, 0, 0, NULL, 0},
  {"c0/bias", 1, {3}, "uint8", 0.0123456789, -0.75, 0, NULL, 0},
  {"s1/depthwise_filter", 4, {3, 3, 3, 2}, "uint8", 0.01, -1.2, 0, NULL, 0},
  {"s1/pointwise_filter", 4, {1, 1, 6, 4}, "uint16", 3.1e-5, -0.9, 0, NULL, 0},
  {"s1/bias", 1, {4}, NULL, 0, 0, 0, NULL, 0},
  {"r/conv/filters", 4, {3, 3, 4, 2}, "uint8", 0.02, -2.5, 1, NULL, 0},
  {"r/conv/bias", 1, {2}, NULL, 0, 0, 1, NULL, 0},
  {"r/scale/weights", 1, {2}, "uint8", 0.05, 0.5, 1, NULL, 0},
  {"r/scale/biases", 1, {2}, NULL, 0, 0, 1, NULL, 0},
  {"fc/weights", 2, {8, 3}, "uint8", 0.007, -0.8, 1, NULL, 0},
  {"fc/bias", 1, {3}, NULL, 0, 0, 1, NULL, 0},
  {"emb", 2, {3, 2}, NULL, 0, 0, 1, NULL, 0},
};
#define NT ((int)(sizeof T / sizeof *T))

static const char *G0A = "shard_a.bin", *G0B = "shard_b.bin", *G1 = "group1.bin";

static void put_bytes(FILE *f, const void *p, size_t n) { CU_ASSERT(fwrite(p, 1, n, f) == n); }

/* Writes the manifest (skipping tensor `skip`, -1 none, and with `tweak` applied to the JSON
 * text) and shards into the temp dir; remembers the dequantized values in T[i].val. Group 0's
 * bytes are split over two shards in the middle of s1/depthwise_filter. */
static const char *write_manifest(const char *file, int skip, const char *extra_entry, int shard_cut)
{
  static char mpath[1024];
  snprintf(mpath, sizeof mpath, "%s", cnnb_test_path(file));
  unsigned char *bytes[2] = {malloc(1 << 16), malloc(1 << 16)};
  size_t nb[2] = {0, 0};
  unsigned seed = 12345;
  char json[8192];
  size_t k = 0;
  k += (size_t)snprintf(json + k, sizeof json - k, "[");
  for (int g = 0; g < 2; g++) {
    if (g == 0)
      k += (size_t)snprintf(json + k, sizeof json - k, "\n {\"paths\": [\"%s\", \"%s\"], \"weights\": [", G0A, G0B);
    else
      k += (size_t)snprintf(json + k, sizeof json - k, ",\n {\"paths\": [\"%s\"], \"weights\": [", G1);
    int first = 1;
    for (int i = 0; i < NT; i++) {
      if (T[i].group != g) continue;
      size_t n = 1;
      for (int d = 0; d < T[i].ndim; d++) n *= (size_t)T[i].dims[d];
      free(T[i].val);
      T[i].val = malloc(n * sizeof(float));
      T[i].n = n;
      for (size_t j = 0; j < n; j++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        unsigned char *o = bytes[g] + nb[g];
        if (!T[i].q) {
          float v = (float)((int)(r % 20001) - 10000) / 7919.0f;
          uint32_t u;
          memcpy(&u, &v, 4);
          for (int b = 0; b < 4; b++) o[b] = (unsigned char)(u >> (8 * b));
          if (i != skip) nb[g] += 4;
          T[i].val[j] = v;
        } else if (!strcmp(T[i].q, "uint8")) {
          unsigned q = r % 256;
          o[0] = (unsigned char)q;
          if (i != skip) nb[g] += 1;
          T[i].val[j] = (float)(q * T[i].scale + T[i].min);
        } else {
          unsigned q = r % 65536;
          o[0] = (unsigned char)(q & 255);
          o[1] = (unsigned char)(q >> 8);
          if (i != skip) nb[g] += 2;
          T[i].val[j] = (float)(q * T[i].scale + T[i].min);
        }
      }
      if (i == skip) continue;
      k += (size_t)snprintf(json + k, sizeof json - k, "%s\n  {\"name\": \"%s\", \"shape\": [", first ? "" : ",",
                            T[i].name);
      for (int d = 0; d < T[i].ndim; d++) k += (size_t)snprintf(json + k, sizeof json - k, "%s%d", d ? ", " : "", T[i].dims[d]);
      k += (size_t)snprintf(json + k, sizeof json - k, "], \"dtype\": \"float32\"");
      if (T[i].q)
        k += (size_t)snprintf(json + k, sizeof json - k, ", \"quantization\": {\"dtype\": \"%s\", \"scale\": %.17g, \"min\": %.17g}",
                              T[i].q, T[i].scale, T[i].min);
      k += (size_t)snprintf(json + k, sizeof json - k, "}");
      first = 0;
    }
    if (g == 1 && extra_entry) k += (size_t)snprintf(json + k, sizeof json - k, ",\n  %s", extra_entry);
    k += (size_t)snprintf(json + k, sizeof json - k, "]}");
  }
  k += (size_t)snprintf(json + k, sizeof json - k, "\n]\n");
  FILE *f = fopen(mpath, "wb");
  put_bytes(f, json, k);
  fclose(f);
  /* group 0: c0/filters (216 bytes) + c0/bias (3) + 20 bytes into s1/depthwise_filter; then the rest */
  const size_t cut = 216 + 3 + 20;
  f = fopen(cnnb_test_path(G0A), "wb");
  put_bytes(f, bytes[0], cut);
  fclose(f);
  f = fopen(cnnb_test_path(G0B), "wb");
  put_bytes(f, bytes[0] + cut, nb[0] - cut);
  fclose(f);
  f = fopen(cnnb_test_path(G1), "wb");
  put_bytes(f, bytes[1], nb[1] - (size_t)shard_cut);
  fclose(f);
  free(bytes[0]);
  free(bytes[1]);
  return mpath;
}

static cnnb_net *build(const char *text)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, text, "tfjs-model.cfg", &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  return net;
}

static const char *model_file(const char *text)
{
  static char p[1024];
  snprintf(p, sizeof p, "%s", cnnb_test_path("tfjs-model.cfg"));
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
  return p;
}

static int exists(const char *p)
{
  struct stat st;
  return stat(p, &st) == 0;
}

static const tens *find(const char *name)
{
  for (int i = 0; i < NT; i++)
    if (!strcmp(T[i].name, name)) return &T[i];
  return NULL;
}

static void test_round_trip(void)
{
  const char *man = write_manifest("m.json", -1, NULL, 0);
  const char *out = cnnb_test_path("m.h5");
  int rc = cnnb_tfjs_convert(man, model_file(MODEL), out);
  if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_FATAL(rc == 0);
  cnnb_net *net = build(MODEL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  rc = cnnb_ckpt_load(out, net, NULL, NULL);
  if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_FATAL(rc == 0);
  int bad = 0;
  /* layer 0: W[o][c][kh][kw] = filters[kh][kw][c][o] */
  const float *w = cnnb_layer_find_param(&net->layers[0], "weights")->data;
  const tens *t = find("c0/filters");
  for (int o = 0; o < 3; o++)
    for (int c = 0; c < 2; c++)
      for (int i = 0; i < 9; i++) bad += w[(o * 2 + c) * 9 + i] != t->val[(i * 2 + c) * 3 + o];
  const float *b = cnnb_layer_find_param(&net->layers[0], "biases")->data;
  for (int o = 0; o < 3; o++) bad += b[o] != find("c0/bias")->val[o];
  /* layer 2 (depthwise, multiplier 2): filter c*2+m = dw[kh][kw][c][m]; its bias 0 */
  w = cnnb_layer_find_param(&net->layers[2], "weights")->data;
  t = find("s1/depthwise_filter");
  for (int c = 0; c < 3; c++)
    for (int m = 0; m < 2; m++)
      for (int i = 0; i < 9; i++) bad += w[(c * 2 + m) * 9 + i] != t->val[(i * 3 + c) * 2 + m];
  b = cnnb_layer_find_param(&net->layers[2], "biases")->data;
  for (int o = 0; o < 6; o++) bad += b[o] != 0.0f;
  /* layer 3 (pointwise): W[o][c] = pw[0][0][c][o], the unit's bias */
  w = cnnb_layer_find_param(&net->layers[3], "weights")->data;
  t = find("s1/pointwise_filter");
  for (int o = 0; o < 4; o++)
    for (int c = 0; c < 6; c++) bad += w[o * 6 + c] != t->val[c * 4 + o];
  b = cnnb_layer_find_param(&net->layers[3], "biases")->data;
  for (int o = 0; o < 4; o++) bad += b[o] != find("s1/bias")->val[o];
  CNNB_ASSERT_EQ_INT(bad, 0);
  /* layer 4: scale folded, W*s and b*s + beta */
  w = cnnb_layer_find_param(&net->layers[4], "weights")->data;
  b = cnnb_layer_find_param(&net->layers[4], "biases")->data;
  t = find("r/conv/filters");
  const float *s = find("r/scale/weights")->val, *sb = find("r/scale/biases")->val, *cb = find("r/conv/bias")->val;
  for (int o = 0; o < 2; o++) {
    for (int c = 0; c < 4; c++)
      for (int i = 0; i < 9; i++) CNNB_ASSERT_NEAR(w[(o * 4 + c) * 9 + i], t->val[(i * 4 + c) * 2 + o] * s[o], 1e-6);
    CNNB_ASSERT_NEAR(b[o], cb[o] * s[o] + sb[o], 1e-6);
  }
  /* layer 5: connected over a 2x2x2 input: row (h*2+w)*2+c of the NHWC matrix is input c*4+h*2+w */
  w = cnnb_layer_find_param(&net->layers[5], "weights")->data;
  t = find("fc/weights");
  bad = 0;
  for (int o = 0; o < 3; o++)
    for (int c = 0; c < 2; c++)
      for (int p = 0; p < 4; p++) bad += w[o * 8 + c * 4 + p] != t->val[(p * 2 + c) * 3 + o];
  b = cnnb_layer_find_param(&net->layers[5], "biases")->data;
  for (int o = 0; o < 3; o++) bad += b[o] != find("fc/bias")->val[o];
  /* layer 6: a lone matrix, bias 0 */
  w = cnnb_layer_find_param(&net->layers[6], "weights")->data;
  t = find("emb");
  for (int o = 0; o < 2; o++)
    for (int i = 0; i < 3; i++) bad += w[o * 3 + i] != t->val[i * 2 + o];
  b = cnnb_layer_find_param(&net->layers[6], "biases")->data;
  for (int o = 0; o < 2; o++) bad += b[o] != 0.0f;
  CNNB_ASSERT_EQ_INT(bad, 0);
  cnnb_net_free(net);
}

/* cnnb_tfjs_load overwrites every parameter, also biases it has no tensor for. */
static void test_load_zeroes_missing_biases(void)
{
  const char *man = write_manifest("m2.json", -1, NULL, 0);
  cnnb_net *net = build(MODEL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  for (size_t i = 0; i < net->nparams; i++) net->params[i] = 7.0f;
  CU_ASSERT_FATAL(cnnb_tfjs_load(man, net) == 0);
  const cnnb_param *b = cnnb_layer_find_param(&net->layers[6], "biases");
  for (size_t i = 0; i < b->count; i++) CNNB_ASSERT_NEAR(b->data[i], 0, 0);
  size_t sevens = 0;
  for (size_t i = 0; i < net->nparams; i++) sevens += net->params[i] == 7.0f;
  CNNB_ASSERT_EQ_INT(sevens, 0);
  cnnb_net_free(net);
}

/* The conversion fails with a message holding every `want` string, and writes nothing. */
static void expect_fail(const char *man, const char *model, const char **want, int nwant)
{
  const char *out = cnnb_test_path("fail.h5");
  unlink(out);
  int rc = cnnb_tfjs_convert(man, model_file(model), out);
  CU_ASSERT(rc < 0);
  for (int i = 0; i < nwant; i++) {
    if (!strstr(cnnb_error_message(), want[i]))
      fprintf(stderr, "\n  message '%s' lacks '%s'\n", cnnb_error_message(), want[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), want[i]));
  }
  CU_ASSERT(!exists(out));
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  CU_ASSERT(!exists(tmp));
}

static void test_wrong_shape(void)
{
  const char *man = write_manifest("shape.json", -1, NULL, 0);
  char model[2048];
  snprintf(model, sizeof model, "%s", MODEL);
  char *p = strstr(model, "filters=3\nsize=3\npad=1\nactivation=relu");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  p[15] = '5'; /* first conv: 5x5 (pad=1 pads 2: the output keeps its size) */
  const char *want[] = {"shape.json", "tensor 'c0/filters' has shape [3,3,2,3]", "needs [5,5,2,3]", "layer 0"};
  expect_fail(man, model, want, 4);
}

static void test_wrong_total(void)
{
  /* a tensor missing: the last layer gets nothing */
  const char *man = write_manifest("short.json", 11, NULL, 0);
  const char *want[] = {"short.json", "layer 6 [connected]", "gets no tensor"};
  expect_fail(man, MODEL, want, 3);
  /* one too many: left over (the extra entry's bytes are absent too, so the shard is short:
   * use a model without the last layer and the full manifest instead) */
  man = write_manifest("long.json", -1, NULL, 0);
  char model[2048];
  snprintf(model, sizeof model, "%s", MODEL);
  *strstr(model, "[connected]\noutput=2") = 0;
  const char *want2[] = {"long.json", "tensor 'emb' is left over"};
  expect_fail(man, model, want2, 2);
  /* a unit whose tensors do not fit together */
  man = write_manifest("role.json", 2, NULL, 0);
  const char *want3[] = {"role.json", "unit 's1' has no filters, depthwise_filter or weights tensor"};
  expect_fail(man, MODEL, want3, 2);
}

static void test_truncated_shard(void)
{
  const char *man = write_manifest("trunc.json", -1, NULL, 3);
  char sz[64];
  const char *want[] = {"group1.bin", "truncated", sz, "trunc.json"};
  /* group 1: 72 + 8 + 2 + 8 + 24 + 12 + 24 = 150 bytes; 147 written */
  snprintf(sz, sizeof sz, "147 bytes, manifest %s needs 150", man);
  expect_fail(man, MODEL, want, 4);
  /* a shard longer than described */
  man = write_manifest("long-shard.json", -1, NULL, 0);
  FILE *f = fopen(cnnb_test_path(G1), "ab");
  fputc(0, f);
  fclose(f);
  const char *want2[] = {"group1.bin", "151 bytes", "describes 150"};
  expect_fail(man, MODEL, want2, 3);
  /* a missing shard */
  man = write_manifest("missing.json", -1, NULL, 0);
  unlink(cnnb_test_path(G0B));
  const char *want3[] = {"shard_b.bin", "cannot open"};
  expect_fail(man, MODEL, want3, 2);
}

static void test_malformed_manifest(void)
{
  const char *p = cnnb_test_path("broken.json");
  FILE *f = fopen(p, "w");
  fputs("[{\"paths\": [\"x.bin\"],\n \"weights\": [{\"name\": \"a\", \"shape\": [1],}]}]", f);
  fclose(f);
  const char *want[] = {"broken.json:2:", "malformed JSON"};
  expect_fail(p, MODEL, want, 2);
  f = fopen(p, "w");
  fputs("{\"paths\": []}", f);
  fclose(f);
  const char *want2[] = {"broken.json", "non-empty array of groups"};
  expect_fail(p, MODEL, want2, 2);
  /* an unsupported quantization names the tensor */
  const char *man = write_manifest("f16.json", -1, "{\"name\": \"x/bias\", \"shape\": [2], \"dtype\": \"float32\", "
                                   "\"quantization\": {\"dtype\": \"float16\", \"scale\": 1, \"min\": 0}}", 0);
  const char *want3[] = {"f16.json", "tensor 'x/bias'", "float16"};
  expect_fail(man, MODEL, want3, 3);
  /* an unknown role */
  man = write_manifest("role2.json", -1, "{\"name\": \"x/gamma\", \"shape\": [2], \"dtype\": \"float32\"}", 0);
  const char *want4[] = {"role2.json", "tensor 'x/gamma'", "unknown role"};
  expect_fail(man, MODEL, want4, 3);
  /* two tensors for one role of a unit */
  man = write_manifest("dup.json", -1, "{\"name\": \"c0/conv/filters\", \"shape\": [0], \"dtype\": \"float32\"}", 0);
  const char *want6[] = {"dup.json", "tensors 'c0/filters' and 'c0/conv/filters' play the same role in unit 'c0'"};
  expect_fail(man, MODEL, want6, 2);
  const char *want5[] = {"nothere.json", "cannot open"};
  expect_fail(cnnb_test_path("nothere.json"), MODEL, want5, 2);
}

/* ---- [net] input_mean / input_scale -------------------------------------------------------- */

static void test_input_norm(void)
{
  cnnb_net *net = build("[net]\nheight=1\nwidth=2\nchannels=3\ninput_mean=10,20,30\ninput_scale=0.5\n"
                        "[avgpool]\n");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  float mean[3], scale;
  CU_ASSERT(cnnb_net_input_norm(net, mean, &scale) == 1);
  CNNB_ASSERT_NEAR(mean[2], 30, 0);
  CNNB_ASSERT_NEAR(scale, 0.5, 0);
  float px[6] = {10, 12, 0, 20, 255, 30}, out[6];
  cnnb_net_normalize_input(net, px, 1, out);
  const float want[6] = {0, 1, -10, 0, 112.5f, 0};
  for (int i = 0; i < 6; i++) CNNB_ASSERT_NEAR(out[i], want[i], 1e-6);
  cnnb_net_free(net);
  net = build("[net]\nheight=1\nwidth=2\nchannels=3\n[avgpool]\n");
  CU_ASSERT(cnnb_net_input_norm(net, mean, &scale) == 0);
  cnnb_net_normalize_input(net, px, 1, out);
  for (int i = 0; i < 6; i++) CNNB_ASSERT_NEAR(out[i], px[i], 0);
  cnnb_net_free(net);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.quiet = 1;
  const char *bad[] = {"[net]\nheight=1\nwidth=1\nchannels=3\ninput_mean=1,2\ninput_scale=1\n[avgpool]\n",
                       "[net]\nheight=1\nwidth=1\nchannels=3\ninput_mean=1\n[avgpool]\n",
                       "[net]\nheight=1\nwidth=1\nchannels=3\ninput_mean=1\ninput_scale=0\n[avgpool]\n"};
  const char *msg[] = {"norm.cfg:5: [net] input_mean has 2 values for 3 channels", "norm.cfg:5: [net] input_mean and input_scale go together",
                       "norm.cfg:6: [net] input_scale must be"};
  for (int i = 0; i < 3; i++) {
    net = NULL;
    CU_ASSERT(cnnb_net_from_string(&net, bad[i], "norm.cfg", &o) == CNNB_ECFG);
    if (!strstr(cnnb_error_message(), msg[i])) fprintf(stderr, "\n  '%s' lacks '%s'\n", cnnb_error_message(), msg[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), msg[i]));
    cnnb_net_free(net);
  }
}

static void cleanup(void)
{
  for (int i = 0; i < NT; i++) free(T[i].val);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("tfjs", NULL, NULL);
  CU_add_test(s, "JSON values, escapes, repeated keys", test_json_values);
  CU_add_test(s, "JSON errors name file:line:col", test_json_errors);
  CU_add_test(s, "manifest round trip: exact dequantized values, layouts, fold", test_round_trip);
  CU_add_test(s, "load overwrites every parameter", test_load_zeroes_missing_biases);
  CU_add_test(s, "wrong shape names tensor, both shapes, file", test_wrong_shape);
  CU_add_test(s, "wrong total: missing and left-over tensors", test_wrong_total);
  CU_add_test(s, "truncated, long and missing shards", test_truncated_shard);
  CU_add_test(s, "malformed manifests", test_malformed_manifest);
  CU_add_test(s, "[net] input_mean/input_scale", test_input_norm);
  int rc = cnnb_test_run();
  cleanup();
  MPI_Finalize();
  return rc;
}

/* Darknet-style INI model files (include/cnnb/cfg.h). */
#include "cnnb/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

static char *trim(char *s)
{
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
  return s;
}

static char *xstrdup(const char *s)
{
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int cnnb_cfg_parse(cnnb_cfg *cfg, const char *text, const char *name)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->path = xstrdup(name ? name : "<memory>");
  cfg->text = xstrdup(text);
  char *buf = xstrdup(text);
  if (!cfg->path || !cfg->text || !buf) {
    free(buf);
    cnnb_cfg_free(cfg);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", name);
  }
  int lineno = 0, rc = 0, cap = 0;
  char *save = NULL;
  for (char *p = buf; p; p = save) {
    save = strchr(p, '\n');
    if (save) *save++ = 0;
    lineno++;
    char *c = strpbrk(p, "#;");
    if (c) *c = 0;
    char *ln = trim(p);
    if (!*ln) continue;
    if (*ln == '[') {
      char *close = strchr(ln, ']');
      if (!close || close[1]) {
        rc = cnnb_error(CNNB_ECFG, "%s:%d: malformed section header '%s'", cfg->path, lineno, ln);
        break;
      }
      *close = 0;
      if (cfg->nsec == cap) {
        cap = cap ? 2 * cap : 32;
        cnnb_cfg_section *ns = realloc(cfg->sec, (size_t)cap * sizeof *ns);
        if (!ns) {
          rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", cfg->path);
          break;
        }
        cfg->sec = ns;
      }
      cnnb_cfg_section *s = &cfg->sec[cfg->nsec++];
      memset(s, 0, sizeof *s);
      s->name = xstrdup(trim(ln + 1));
      s->line = lineno;
      continue;
    }
    char *eq = strchr(ln, '=');
    if (!eq) {
      rc = cnnb_error(CNNB_ECFG, "%s:%d: expected key=value, got '%s'", cfg->path, lineno, ln);
      break;
    }
    if (!cfg->nsec) {
      rc = cnnb_error(CNNB_ECFG, "%s:%d: key outside any [section]", cfg->path, lineno);
      break;
    }
    *eq = 0;
    char *k = trim(ln), *v = trim(eq + 1);
    if (!*k) {
      rc = cnnb_error(CNNB_ECFG, "%s:%d: empty key", cfg->path, lineno);
      break;
    }
    cnnb_cfg_section *s = &cfg->sec[cfg->nsec - 1];
    if (cnnb_cfg_find(s, k)) {
      rc = cnnb_error(CNNB_ECFG, "%s:%d: key '%s' repeated in [%s] of line %d", cfg->path, lineno, k,
                      s->name, s->line);
      break;
    }
    cnnb_cfg_kv *nkv = realloc(s->kv, (size_t)(s->nkv + 1) * sizeof *nkv);
    if (!nkv) {
      rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", cfg->path);
      break;
    }
    s->kv = nkv;
    s->kv[s->nkv] = (cnnb_cfg_kv){xstrdup(k), xstrdup(v), lineno, 0};
    s->nkv++;
  }
  free(buf);
  if (!rc && !cfg->nsec) rc = cnnb_error(CNNB_ECFG, "%s: no [sections] in model file", cfg->path);
  if (rc) cnnb_cfg_free(cfg);
  return rc;
}

int cnnb_cfg_load(cnnb_cfg *cfg, const char *path)
{
  memset(cfg, 0, sizeof *cfg);
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: cannot open model file: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0 || n > (64 << 20)) {
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: not a model file (size %ld)", path, n);
  }
  char *text = malloc((size_t)n + 1);
  if (!text) {
    fclose(f);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  size_t got = fread(text, 1, (size_t)n, f);
  fclose(f);
  text[got] = 0;
  if (memchr(text, 0, got)) {
    free(text);
    return cnnb_error(CNNB_ECFG, "%s: binary data in a model file", path);
  }
  int rc = cnnb_cfg_parse(cfg, text, path);
  free(text);
  return rc;
}

void cnnb_cfg_free(cnnb_cfg *cfg)
{
  if (!cfg) return;
  for (int i = 0; i < cfg->nsec; i++) {
    for (int j = 0; j < cfg->sec[i].nkv; j++) {
      free(cfg->sec[i].kv[j].key);
      free(cfg->sec[i].kv[j].value);
    }
    free(cfg->sec[i].kv);
    free(cfg->sec[i].name);
  }
  free(cfg->sec);
  free(cfg->path);
  free(cfg->text);
  memset(cfg, 0, sizeof *cfg);
}

cnnb_cfg_kv *cnnb_cfg_find(cnnb_cfg_section *s, const char *key)
{
  for (int i = 0; i < s->nkv; i++)
    if (!strcmp(s->kv[i].key, key)) return &s->kv[i];
  return NULL;
}

const char *cnnb_cfg_str(cnnb_cfg_section *s, const char *key, const char *def)
{
  cnnb_cfg_kv *kv = cnnb_cfg_find(s, key);
  if (!kv) return def;
  kv->used = 1;
  return kv->value;
}

static int bad(const cnnb_cfg *cfg, const cnnb_cfg_kv *kv, const char *what)
{
  return cnnb_error(CNNB_ECFG, "%s:%d: key '%s' = '%s': %s", cfg->path, kv->line, kv->key, kv->value,
                    what);
}

int cnnb_cfg_int(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, int def, int lo, int hi,
                 int *out)
{
  cnnb_cfg_kv *kv = cnnb_cfg_find(s, key);
  *out = def;
  if (!kv) return 0;
  kv->used = 1;
  char *end;
  errno = 0;
  long v = strtol(kv->value, &end, 10);
  if (end == kv->value || *trim(end) || errno) return bad(cfg, kv, "not an integer");
  if (v < lo || v > hi) {
    char msg[96];
    snprintf(msg, sizeof msg, "out of range [%d, %d]", lo, hi);
    return bad(cfg, kv, msg);
  }
  *out = (int)v;
  return 0;
}

int cnnb_cfg_float(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, float def, float lo,
                   float hi, float *out)
{
  cnnb_cfg_kv *kv = cnnb_cfg_find(s, key);
  *out = def;
  if (!kv) return 0;
  kv->used = 1;
  char *end;
  errno = 0;
  double v = strtod(kv->value, &end);
  if (end == kv->value || *trim(end) || errno || !isfinite(v)) return bad(cfg, kv, "not a number");
  if (v < lo || v > hi) {
    char msg[96];
    snprintf(msg, sizeof msg, "out of range [%g, %g]", lo, hi);
    return bad(cfg, kv, msg);
  }
  *out = (float)v;
  return 0;
}

/* Shared by the list getters: parses "a, b, c" with parse_one per entry. */
static int parse_list(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, void *vals,
                      size_t elem, int max, int *n, int is_float)
{
  cnnb_cfg_kv *kv = cnnb_cfg_find(s, key);
  *n = 0;
  if (!kv) return 0;
  kv->used = 1;
  const char *p = kv->value;
  while (*p) {
    char *end;
    errno = 0;
    double v = is_float ? strtod(p, &end) : (double)strtol(p, &end, 10);
    if (end == p || errno) return bad(cfg, kv, is_float ? "not a list of numbers" : "not a list of integers");
    if (*n == max) return bad(cfg, kv, "too many entries");
    if (is_float)
      ((float *)vals)[*n] = (float)v;
    else
      ((int *)vals)[*n] = (int)v;
    (*n)++;
    (void)elem;
    p = end;
    while (isspace((unsigned char)*p)) p++;
    if (*p == ',') {
      p++;
      while (isspace((unsigned char)*p)) p++;
      if (!*p) return bad(cfg, kv, "trailing comma");
    } else if (*p) {
      return bad(cfg, kv, is_float ? "not a list of numbers" : "not a list of integers");
    }
  }
  return 0;
}

int cnnb_cfg_ints(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, int *vals, int max, int *n)
{
  return parse_list(cfg, s, key, vals, sizeof(int), max, n, 0);
}

int cnnb_cfg_floats(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, float *vals, int max,
                    int *n)
{
  return parse_list(cfg, s, key, vals, sizeof(float), max, n, 1);
}

/* Keys that Darknet's parser knows (any section) and that cnn-batch reads in no section yet:
 * they get a warning, not an error, so real Darknet cfg files load for `info`. */
static const char *const darknet_vocab[] = {
  "subdivisions", "angle", "saturation", "exposure", "hue", "max_batches", "policy", "steps",
  "scales", "burn_in", "power", "gamma", "step", "learning_rate_min", "sgdr_cycle", "sgdr_mult",
  "seq_scales", "max_chart_loss", "mosaic", "cutmix", "mixup", "blur", "letter_box", "flip",
  "jitter", "random", "ignore_thresh", "truth_thresh", "iou_thresh", "iou_loss", "iou_normalizer",
  "cls_normalizer", "obj_normalizer", "scale_x_y", "nms_kind", "beta_nms", "max_delta", "counters_per_class",
  "label_smooth_eps", "focal_loss", "resize", "new_coords", "time_steps", "track_history_size",
  "sequential_subdivisions", "try_fix_nan", "adam", "B1", "B2", "eps", "min_crop", "max_crop",
  "aspect", "center", "crop_height", "crop_width", "rescore", "bias_match", "absolute", "thresh",
  "coord_scale", "object_scale", "noobject_scale", "class_scale", "softmax", "sqrt", "coords", "num",
  "classes", "anchors", "mask", "spatial", "dontload", "dontloadscales", "stopbackward", "binary",
  "xnor", "bin_output", "dot", "flipped", "tree", "map", "temperature", "noloss", "shift", "rotate",
  "onlyforward", "momentum", "decay", "learning_rate", "inputs", "height", "width", "channels",
  "max_crop", "train_only_bn", "dynamic_minibatch", "gaussian_noise", "blur", "adversarial_lr",
  "attention", "contrastive", "unsupervised", "show_receptive_field", "equidistant_point", "log",
  "stretch", "stretch_sway", "weights_type", "weights_normalization", "assisted_excitation",
  "antialiasing", "share_index", "dilation", "stride_x", "stride_y", "size_x", "size_y",
  "maxpool_depth", "out_channels", "reverse", "background", "bottleneck", "deform",
  "sway", "group_id", "alpha", "beta", "kappa", "groups", "train", "cost_type", "type", "scale",
  NULL};

static int in_vocab(const char *k)
{
  for (int i = 0; darknet_vocab[i]; i++)
    if (!strcmp(darknet_vocab[i], k)) return 1;
  return 0;
}

/* True when key k was already reported at an earlier unused position. */
static int warned_before(const cnnb_cfg *cfg, int si, int ki, const char *k)
{
  for (int i = 0; i <= si; i++)
    for (int j = 0; j < (i == si ? ki : cfg->sec[i].nkv); j++)
      if (!cfg->sec[i].kv[j].used && !strcmp(cfg->sec[i].kv[j].key, k)) return 1;
  return 0;
}

int cnnb_cfg_check_unused(const cnnb_cfg *cfg, int warn)
{
  for (int i = 0; i < cfg->nsec; i++) {
    cnnb_cfg_section *s = &cfg->sec[i];
    for (int j = 0; j < s->nkv; j++) {
      cnnb_cfg_kv *kv = &s->kv[j];
      if (kv->used) continue;
      if (!in_vocab(kv->key))
        return cnnb_error(CNNB_ECFG, "%s:%d: unknown key '%s' in [%s]", cfg->path, kv->line, kv->key,
                          s->name);
      if (warn && !warned_before(cfg, i, j, kv->key))
        cnnb_log(CNNB_LOG_WARN, "%s:%d: Darknet key '%s' is not used by cnn-batch (ignored)", cfg->path,
                 kv->line, kv->key);
    }
  }
  return 0;
}

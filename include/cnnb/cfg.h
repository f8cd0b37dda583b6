/* Model files: Darknet-style INI ([section] then key=value lines, '#' and ';' comments).
 * Every key remembers its line and whether a layer consumed it, so that after building a
 * network each unconsumed key can be reported: a key of Darknet's vocabulary that cnn-batch
 * does not act on gets one warning; anything else is an error naming file, line and key. */
#ifndef CNNB_CFG_H
#define CNNB_CFG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnnb_cfg_kv {
  char *key, *value;
  int line;
  int used;
} cnnb_cfg_kv;

typedef struct cnnb_cfg_section {
  char *name; /* without brackets */
  int line;
  cnnb_cfg_kv *kv;
  int nkv;
} cnnb_cfg_section;

typedef struct cnnb_cfg {
  char *path; /* for messages */
  char *text; /* the whole file, kept so checkpoints can store the model */
  cnnb_cfg_section *sec;
  int nsec;
} cnnb_cfg;

int cnnb_cfg_load(cnnb_cfg *cfg, const char *path);
/* Parses text held in memory; name is used in messages. */
int cnnb_cfg_parse(cnnb_cfg *cfg, const char *text, const char *name);
void cnnb_cfg_free(cnnb_cfg *cfg);

/* Getters mark the key used. They return 0 and store the default when the key is absent,
 * or CNNB_ECFG with "FILE:LINE: key 'k' ..." when the value does not parse or is outside
 * [lo, hi]. */
int cnnb_cfg_int(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, int def, int lo, int hi,
                 int *out);
int cnnb_cfg_float(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, float def, float lo,
                   float hi, float *out);
/* Returns the raw string or def (not copied; valid while cfg lives). */
const char *cnnb_cfg_str(cnnb_cfg_section *s, const char *key, const char *def);
/* Comma-separated integers; *n receives the count; max entries cap. */
int cnnb_cfg_ints(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, int *vals, int max, int *n);
int cnnb_cfg_floats(const cnnb_cfg *cfg, cnnb_cfg_section *s, const char *key, float *vals, int max,
                    int *n);
cnnb_cfg_kv *cnnb_cfg_find(cnnb_cfg_section *s, const char *key);
/* After building: fails on the first unconsumed key that Darknet does not know either; with
 * warn, prints one warning per distinct unconsumed Darknet key. */
int cnnb_cfg_check_unused(const cnnb_cfg *cfg, int warn);

#ifdef __cplusplus
}
#endif
#endif

/* A small, strict JSON reader (RFC 8259): a parsed tree of values, enough for TF.js weights
 * manifests. Strict means: no comments, no trailing commas, no NaN/Infinity, no control
 * characters in strings, nothing after the top-level value; errors say "NAME:LINE:COL: ...".
 *
 *   cnnb_json *doc;
 *   if (cnnb_json_parse(&doc, text, len, "m.json") < 0) puts(cnnb_error_message());
 *   const cnnb_json *w = cnnb_json_get(&doc->items[0], "weights");
 *   cnnb_json_free(doc);
 */
#ifndef CNNB_IO_JSON_H
#define CNNB_IO_JSON_H

#include <stddef.h>

typedef enum cnnb_json_type {
  CNNB_JSON_NULL = 0,
  CNNB_JSON_FALSE,
  CNNB_JSON_TRUE,
  CNNB_JSON_NUMBER,
  CNNB_JSON_STRING,
  CNNB_JSON_ARRAY,
  CNNB_JSON_OBJECT
} cnnb_json_type;

typedef struct cnnb_json cnnb_json;
struct cnnb_json {
  cnnb_json_type type;
  double num;       /* NUMBER */
  char *str;        /* STRING (UTF-8, NUL-terminated; may hold \u0000 as a NUL: use len) */
  size_t len;       /* STRING bytes */
  cnnb_json *items; /* ARRAY elements / OBJECT values, n of them */
  char **keys;      /* OBJECT keys, n of them */
  size_t n;
  int line, col;    /* where the value starts, for messages */
};

/* Parses text[0..len) into a new tree (*out; free with cnnb_json_free). name is used in
 * messages. Returns 0, or CNNB_EIO with "NAME:LINE:COL: what" / CNNB_ENOMEM. */
int cnnb_json_parse(cnnb_json **out, const char *text, size_t len, const char *name);
void cnnb_json_free(cnnb_json *v);
/* The member of an object by key (the last one when repeated), NULL when absent or when v is
 * not an object. */
const cnnb_json *cnnb_json_get(const cnnb_json *v, const char *key);
/* "null", "number", ... for messages. */
const char *cnnb_json_type_name(cnnb_json_type t);

#endif

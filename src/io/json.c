/* Strict JSON reader (json.h): recursive descent over the text, depth-limited so that a
 * hostile file cannot exhaust the stack. */
#include "io/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

#define JSON_MAX_DEPTH 256

typedef struct jparser {
  const char *s, *end, *name;
  const char *line_start;
  int line;
} jparser;

static int jerr(jparser *p, const char *at, const char *what)
{
  /* recompute the line of `at` from the start for an exact position */
  return cnnb_error(CNNB_EIO, "%s:%d:%d: malformed JSON: %s", p->name, p->line, (int)(at - p->line_start) + 1, what);
}

static void skip_ws(jparser *p)
{
  while (p->s < p->end) {
    char c = *p->s;
    if (c == '\n') {
      p->line++;
      p->line_start = p->s + 1;
    } else if (c != ' ' && c != '\t' && c != '\r') {
      break;
    }
    p->s++;
  }
}

static void json_clear(cnnb_json *v)
{
  if (!v) return;
  free(v->str);
  for (size_t i = 0; i < v->n; i++) {
    if (v->items) json_clear(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  memset(v, 0, sizeof *v);
}

void cnnb_json_free(cnnb_json *v)
{
  json_clear(v);
  free(v);
}

static int hex4(const char *s, unsigned *out)
{
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* At the opening quote; on success *str is a malloc'ed UTF-8 copy. The output is never longer
 * than the escaped input (\uXXXX: 6 bytes in, at most 3 out; pairs 12 in, 4 out). */
static int parse_string(jparser *p, char **str, size_t *len)
{
  const char *start = p->s++;
  const char *q = p->s;
  while (q < p->end && *q != '"') q += (*q == '\\' && q + 1 < p->end) ? 2 : 1;
  if (q >= p->end) return jerr(p, start, "unterminated string");
  char *o = malloc((size_t)(q - p->s) + 1);
  if (!o) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", p->name);
  size_t k = 0;
  while (p->s < q) {
    unsigned char c = (unsigned char)*p->s;
    if (c < 0x20) {
      free(o);
      return jerr(p, p->s, "control character in string");
    }
    if (c != '\\') {
      o[k++] = (char)c;
      p->s++;
      continue;
    }
    const char *esc = p->s++;
    char e = *p->s++;
    switch (e) {
      case '"': o[k++] = '"'; break;
      case '\\': o[k++] = '\\'; break;
      case '/': o[k++] = '/'; break;
      case 'b': o[k++] = '\b'; break;
      case 'f': o[k++] = '\f'; break;
      case 'n': o[k++] = '\n'; break;
      case 'r': o[k++] = '\r'; break;
      case 't': o[k++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (q - p->s < 4 || hex4(p->s, &cp)) {
          free(o);
          return jerr(p, esc, "bad \\u escape");
        }
        p->s += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate needs its low half */
          if (q - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' || hex4(p->s + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
            free(o);
            return jerr(p, esc, "unpaired surrogate in \\u escape");
          }
          p->s += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          free(o);
          return jerr(p, esc, "unpaired surrogate in \\u escape");
        }
        k += put_utf8(o + k, cp);
        break;
      }
      default:
        free(o);
        return jerr(p, esc, "bad escape in string");
    }
  }
  o[k] = 0;
  p->s = q + 1;
  *str = o;
  *len = k;
  return 0;
}

static int parse_number(jparser *p, cnnb_json *v)
{
  const char *s = p->s, *q = s;
  if (q < p->end && *q == '-') q++;
  if (q >= p->end) return jerr(p, s, "bad number");
  if (*q == '0') {
    q++;
  } else if (*q >= '1' && *q <= '9') {
    while (q < p->end && *q >= '0' && *q <= '9') q++;
  } else {
    return jerr(p, s, "bad number");
  }
  if (q < p->end && *q == '.') {
    q++;
    if (q >= p->end || *q < '0' || *q > '9') return jerr(p, s, "bad number (digits must follow '.')");
    while (q < p->end && *q >= '0' && *q <= '9') q++;
  }
  if (q < p->end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < p->end && (*q == '+' || *q == '-')) q++;
    if (q >= p->end || *q < '0' || *q > '9') return jerr(p, s, "bad number (exponent without digits)");
    while (q < p->end && *q >= '0' && *q <= '9') q++;
  }
  /* strtod needs a terminated copy: the text need not be NUL-terminated */
  char buf[128];
  size_t n = (size_t)(q - s);
  if (n >= sizeof buf) return jerr(p, s, "number too long");
  memcpy(buf, s, n);
  buf[n] = 0;
  errno = 0;
  v->num = strtod(buf, NULL);
  if (errno == ERANGE && (v->num > 1.0 || v->num < -1.0)) return jerr(p, s, "number out of range");
  v->type = CNNB_JSON_NUMBER;
  p->s = q;
  return 0;
}

static int parse_value(jparser *p, cnnb_json *v, int depth);

static int grow(void **a, size_t *cap, size_t n, size_t elem)
{
  if (n < *cap) return 0;
  size_t nc = *cap ? 2 * *cap : 8;
  void *na = realloc(*a, nc * elem);
  if (!na) return -1;
  *a = na;
  *cap = nc;
  return 0;
}

static int parse_container(jparser *p, cnnb_json *v, int depth, int object)
{
  const char close = object ? '}' : ']';
  const char *open = p->s++;
  v->type = object ? CNNB_JSON_OBJECT : CNNB_JSON_ARRAY;
  if (depth >= JSON_MAX_DEPTH) return jerr(p, open, "nested too deeply");
  size_t cap = 0, kcap = 0;
  skip_ws(p);
  if (p->s < p->end && *p->s == close) {
    p->s++;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    size_t klen;
    int rc;
    skip_ws(p);
    if (object) {
      if (p->s >= p->end || *p->s != '"') return jerr(p, p->s, "expected a string key");
      if ((rc = parse_string(p, &key, &klen)) < 0) return rc;
      skip_ws(p);
      if (p->s >= p->end || *p->s != ':') {
        free(key);
        return jerr(p, p->s, "expected ':' after key");
      }
      p->s++;
      if (grow((void **)&v->keys, &kcap, v->n, sizeof *v->keys)) {
        free(key);
        return cnnb_error(CNNB_ENOMEM, "%s: out of memory", p->name);
      }
      v->keys[v->n] = key;
    }
    if (grow((void **)&v->items, &cap, v->n, sizeof *v->items)) {
      if (object) free(v->keys[v->n]);
      return cnnb_error(CNNB_ENOMEM, "%s: out of memory", p->name);
    }
    memset(&v->items[v->n], 0, sizeof *v->items);
    v->n++; /* counted before parsing so that a failure frees what the element holds */
    if ((rc = parse_value(p, &v->items[v->n - 1], depth + 1)) < 0) return rc;
    skip_ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      skip_ws(p);
      if (p->s < p->end && *p->s == close) return jerr(p, p->s, "trailing comma");
      continue;
    }
    if (p->s < p->end && *p->s == close) {
      p->s++;
      return 0;
    }
    return jerr(p, p->s, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int literal(jparser *p, const char *word, cnnb_json *v, cnnb_json_type t)
{
  size_t n = strlen(word);
  if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n)) return jerr(p, p->s, "unexpected character");
  p->s += n;
  v->type = t;
  return 0;
}

static int parse_value(jparser *p, cnnb_json *v, int depth)
{
  skip_ws(p);
  if (p->s >= p->end) return jerr(p, p->s, "unexpected end of text");
  v->line = p->line;
  v->col = (int)(p->s - p->line_start) + 1;
  switch (*p->s) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"':
      v->type = CNNB_JSON_STRING;
      return parse_string(p, &v->str, &v->len);
    case 't': return literal(p, "true", v, CNNB_JSON_TRUE);
    case 'f': return literal(p, "false", v, CNNB_JSON_FALSE);
    case 'n': return literal(p, "null", v, CNNB_JSON_NULL);
    default: return parse_number(p, v);
  }
}

int cnnb_json_parse(cnnb_json **out, const char *text, size_t len, const char *name)
{
  *out = NULL;
  jparser p = {text, text + len, name ? name : "JSON", text, 1};
  cnnb_json *v = calloc(1, sizeof *v);
  if (!v) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", p.name);
  /* a UTF-8 byte order mark is not JSON; say so rather than "unexpected character" */
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) {
    cnnb_json_free(v);
    return jerr(&p, text, "byte order mark at the start");
  }
  int rc = parse_value(&p, v, 0);
  if (!rc) {
    skip_ws(&p);
    if (p.s < p.end) rc = jerr(&p, p.s, "text after the JSON value");
  }
  if (rc) {
    cnnb_json_free(v);
    return rc;
  }
  *out = v;
  return 0;
}

const cnnb_json *cnnb_json_get(const cnnb_json *v, const char *key)
{
  if (!v || v->type != CNNB_JSON_OBJECT) return NULL;
  for (size_t i = v->n; i-- > 0;)
    if (!strcmp(v->keys[i], key)) return &v->items[i];
  return NULL;
}

const char *cnnb_json_type_name(cnnb_json_type t)
{
  static const char *names[] = {"null", "false", "true", "number", "string", "array", "object"};
  return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

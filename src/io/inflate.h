/* Private: our own whole-buffer DEFLATE decoder (RFC 1951) with the zlib wrapper (RFC 1950),
 * for the deflate chunks the project reads as stored (cnnb_h5_read_deflate_chunk in
 * io/h5util.h: embed's crop sets, the image sets of detect and faces).
 *
 * Why: zlib's inflate was a measured share of reading deflate-compressed HDF5 chunks (embed's
 * crop sets, detect's image sets), and the runtime dependencies are fixed, so libdeflate cannot
 * be linked. A decoder that knows the whole input and the whole output buffer up front can
 * keep a 64-bit bit buffer refilled without branches, decode a literal or a length with its
 * extra bits in one table lookup, and copy matches by words into slack at the output's end;
 * near either buffer's end it switches to a checked byte-by-byte path.
 *
 * Output is byte-identical to zlib's for every stream zlib accepts; every stream zlib rejects
 * is rejected. On any input (corrupt, truncated, hostile) the decoder reads only
 * [src, src + n) and writes only [dst, dst + cap). */
#ifndef CNNB_IO_INFLATE_H
#define CNNB_IO_INFLATE_H

#include <stddef.h>
#include <stdint.h>

/* Results of the decoders. Not cnnb_status values: callers turn them into CNNB_EIO with a
 * message that names the file and dataset. */
enum {
  CNNB_INFLATE_OK = 0,
  CNNB_INFLATE_CORRUPT = -101,     /* bad header, bad code, distance too far, truncated, bad adler32 */
  CNNB_INFLATE_OVERFLOW = -102,    /* the output does not fit in cap bytes */
  CNNB_INFLATE_UNSUPPORTED = -103, /* a zlib stream with a preset dictionary (FDICT) */
};

/* Decodes one complete zlib stream (header CM=8, CINFO <= 7, FCHECK; stored, fixed and
 * dynamic blocks; the adler32 trailer checked) from src[0..n) into dst[0..cap). Returns
 * CNNB_INFLATE_OK and the decoded size in *out_n, or a negative CNNB_INFLATE_* code (then
 * *out_n and dst's contents are unspecified). Bytes after the trailer are ignored, as zlib's
 * uncompress() does. The adler32 is cnnb_adler32 (zlib's where the CPU lacks SSSE3). Thread-safe; uses about 16 KiB of stack. */
int cnnb_inflate_zlib(const void *src, size_t n, void *dst, size_t cap, size_t *out_n);

/* The same for raw DEFLATE data (no header, no trailer): *in_used (if not NULL) gets the
 * number of input bytes the blocks took, the final partial byte included. */
int cnnb_inflate_raw(const void *src, size_t n, void *dst, size_t cap, size_t *out_n, size_t *in_used);

/* adler32 of p[0..n) continuing from adler (1 to start), as zlib's adler32(); SSSE3 where the
 * CPU has it. */
uint32_t cnnb_adler32(uint32_t adler, const void *p, size_t n);

/* 0 when the environment has CNNB_INFLATE=zlib (callers then use zlib), else 1. */
int cnnb_inflate_enabled(void);

#endif

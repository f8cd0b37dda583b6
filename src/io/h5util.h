/* Private HDF5 helpers shared by the dataset reader, the importer and the output writer. */
#ifndef CNNB_IO_H5UTIL_H
#define CNNB_IO_H5UTIL_H

#include <hdf5.h>

/* Turns off HDF5's automatic error stack printing so that only our one-line message shows. */
void cnnb_h5_quiet(void);
/* 1 when the dataset creation property list dcpl is chunked with deflate as its only filter
 * (what import and h5py's gzip write): its chunks can be read by cnnb_h5_read_deflate_chunk. */
int cnnb_h5_deflate_only(hid_t dcpl);
/* The chunk of d at coordinates off read as stored (H5Dread_chunk) and decoded by the
 * project's DEFLATE decoder (io/inflate.h; zlib under CNNB_INFLATE=zlib or for a preset
 * dictionary) into dst, which must receive exactly n bytes; a chunk HDF5 stored without the
 * filter is copied. Skips HDF5's filter pipeline and chunk cache, and zlib. *zbuf, *zcap: the
 * caller's scratch for the compressed bytes, grown here (free it). Returns 0, CNNB_ENOMEM, or
 * -1 when HDF5 fails, the chunk was never written, or the data are corrupt (the caller names
 * the file and dataset). */
int cnnb_h5_read_deflate_chunk(hid_t d, const hsize_t *off, void *dst, size_t n, unsigned char **zbuf, size_t *zcap);
/* 0 if PATH is a regular HDF5 file, else CNNB_EIO with "PATH: no such file" or
 * "PATH: not an HDF5 file". */
int cnnb_h5_check_file(const char *path);
/* Attribute writers on loc (file, group or dataset); 0 or a negative HDF5 result. */
int cnnb_h5_attr_int(hid_t loc, const char *name, long long v, hid_t type);
int cnnb_h5_attr_str(hid_t loc, const char *name, const char *s);
int cnnb_h5_attr_str_array(hid_t loc, const char *name, const char *const *s, int n);
int cnnb_h5_attr_f32_array(hid_t loc, const char *name, const float *v, int n);
/* Reads an integer scalar attribute; 1 if read, 0 if absent or not a scalar integer. */
int cnnb_h5_attr_get_int(hid_t loc, const char *name, long long *v);
/* Reads a float array attribute of exactly n elements; 1 if read, 0 if absent, -1 if the
 * attribute exists with another size or a non-numeric type. */
int cnnb_h5_attr_get_f32_array(hid_t loc, const char *name, float *v, int n);
/* Reads a string attribute: an array of strings (variable or fixed length) or one string that
 * is split at commas. Returns the count (>= 0; 0 when absent) and a malloc'ed array of
 * malloc'ed strings in *out (free with cnnb_h5_free_strs); negative on allocation failure. */
int cnnb_h5_attr_get_strs(hid_t loc, const char *name, char ***out);
void cnnb_h5_free_strs(char **s, int n);
/* Short name of an HDF5 type for messages ("uint8", "int64", "float32", "string", ...). */
const char *cnnb_h5_type_name(hid_t type);

#endif

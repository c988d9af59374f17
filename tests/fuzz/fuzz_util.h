/* fuzz_util.h — what the fuzz targets share: scratch files and the h5spec encoding.
 *
 * cqat's loaders take paths, so a target writes its input to a scratch file (one per
 * slot, created once per process in /dev/shm or /tmp, removed at exit) and calls the
 * loader on that path.
 *
 * HDF5 inputs come in two modes, told apart by their first byte:
 *   'R'   raw (only with CQAT_FUZZ_RAW=1 in the environment): the rest is the file's
 *         bytes as they are. This fuzzes libhdf5's own parser, which is not ours to
 *         fix and does fail on corrupt containers (docs/RELIABILITY.md), so it is off
 *         by default; without the variable an 'R' input is read as h5spec.
 *   other h5spec: the rest is a little program that builds a well-formed HDF5 file
 *         through the HDF5 API, so that mutations change what the file says (names,
 *         dtypes, shapes, attribute values, data) instead of breaking the container:
 *         this is what exercises cqat's own checks. tests/fuzz/make_corpus.py encodes
 *         real files this way.
 *
 * h5spec: records until the input ends (at most FUZZ_H5_MAX_RECORDS), each an op byte
 * (taken modulo 4) and its operands; a string is a length byte and that many bytes, a
 * number an unsigned LEB128 varint, a type a byte (modulo the count of types below):
 *   0 group     PATH                       (intermediate groups are created)
 *   1 dataset   PATH TYPE RANK DIM* FLAGS [DATA]
 *               RANK modulo 8 (0 = scalar); FLAGS bit 0: write DATA (numel * size bytes,
 *               zero-padded when the input ends; only up to FUZZ_H5_MAX_DATA bytes,
 *               larger datasets are left unwritten), bit 1: chunked layout
 *   2 attribute PATH NAME TYPE COUNT VALUE*  (PATH "" or "." is the root; COUNT 0 a
 *               scalar, 255 an empty (null) dataspace, else a 1-D array of COUNT)
 *               a fixed string type adds a length byte before the values; a variable
 *               string value is a string; numbers are raw little-endian bytes
 *   3 link      KIND TARGET PATH           (KIND even: hard link, odd: soft link)
 * Types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 u64, 7 i64, 8 f32, 9 f64,
 *        10 fixed-length string, 11 variable-length UTF-8 string.
 * Anything HDF5 refuses to create is skipped: the file is always a valid one.
 */
#ifndef CQAT_FUZZ_UTIL_H
#define CQAT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

enum {
    FUZZ_SLOTS = 4,
    FUZZ_H5_MAX_RECORDS = 512,
    FUZZ_H5_MAX_DATA = 1 << 18, /* bytes written into datasets, per input */
};

/* The path of scratch file `slot` (0 .. FUZZ_SLOTS-1); created on first use. Aborts if
 * no scratch file can be made (nothing could be fuzzed). */
const char *fuzz_scratch_path(int slot);

/* Replaces the contents of scratch file `slot` with data[0..size). */
void fuzz_write_file(int slot, const uint8_t *data, size_t size);

/* Writes an HDF5 input (raw or h5spec, see above) to scratch file `slot` and returns
 * its path. With FUZZ_SAVE=PATH in the environment the file is also copied to PATH
 * (to look at an input with h5dump). */
const char *fuzz_write_h5(int slot, const uint8_t *data, size_t size);

/* Silences HDF5's error printing (the loaders report errors themselves). */
void fuzz_h5_init(void);

/* Counts the open HDF5 identifiers of each kind (files, groups, datasets, attributes,
 * types, spaces, property lists) as the baseline for fuzz_h5_check_closed(). */
void fuzz_h5_mark(void);

/* Aborts if more HDF5 identifiers are open than at fuzz_h5_mark(): a loader that
 * returns must have closed everything it opened. `who` names the loader. */
void fuzz_h5_check_closed(const char *who);

/* With FUZZ_VERBOSE=1 in the environment, prints what a load gave ("ok" or its error
 * message): to see which inputs of a corpus pass, and why the others fail. */
void fuzz_report(const char *who, const char *error);

/* The 4 bytes at p as a little-endian uint32 (how the data targets split their input). */
static inline uint32_t fuzz_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif

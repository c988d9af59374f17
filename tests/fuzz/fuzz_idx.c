/* fuzz_idx.c — IDX images + labels (plain or gzip) through data_idx_load.
 *
 * Input: a 4-byte little-endian split point s, then the images file (its first
 * s mod (rest + 1) bytes) and the labels file (the remainder). */
#include <string.h>

#include "data/data.h"
#include "fuzz_data_check.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t split = fuzz_le32(data);
    data += 4;
    size -= 4;
    size_t n_images = split % (size + 1);
    fuzz_write_file(0, data, n_images);
    fuzz_write_file(1, data + n_images, size - n_images);

    data_dataset ds;
    ag_error_clear();
    ag_status st = data_idx_load(fuzz_scratch_path(0), fuzz_scratch_path(1), &ds);
    fuzz_report("data_idx_load", st == AG_OK ? NULL : ag_last_error());
    if (st == AG_OK) {
        fuzz_check_dataset(&ds);
    } else {
        static const data_dataset zero;
        if (memcmp(&ds, &zero, sizeof ds) != 0)
            fuzz_fail("a failed IDX load left the dataset non-empty");
        if (!ag_last_error()[0])
            fuzz_fail("a failed IDX load left no message");
    }
    data_dataset_deinit(&ds);
    return 0;
}

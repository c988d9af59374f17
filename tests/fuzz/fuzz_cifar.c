/* fuzz_cifar.c — CIFAR-10 binary batches through data_cifar10_load.
 *
 * Input: a count byte (1 + b mod 3 files), then for every file but the last a
 * 4-byte little-endian length (taken modulo what is left), then the files' bytes. */
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
    if (size < 1)
        return 0;
    int32_t n_files = 1 + data[0] % 3;
    data++;
    size--;
    size_t len[3] = {0, 0, 0};
    for (int32_t i = 0; i + 1 < n_files; i++) {
        if (size < 4)
            return 0;
        len[i] = fuzz_le32(data);
        data += 4;
        size -= 4;
    }
    const char *paths[3];
    for (int32_t i = 0; i < n_files; i++) {
        size_t n = i + 1 < n_files ? len[i] % (size + 1) : size;
        fuzz_write_file(i, data, n);
        paths[i] = fuzz_scratch_path(i);
        data += n;
        size -= n;
    }

    data_dataset ds;
    ag_error_clear();
    ag_status st = data_cifar10_load(paths, n_files, &ds);
    fuzz_report("data_cifar10_load", st == AG_OK ? NULL : ag_last_error());
    if (st == AG_OK) {
        if (ds.c != 3 || ds.h != 32 || ds.w != 32 || ds.n_classes != 10)
            fuzz_fail("a CIFAR-10 dataset that is not 3x32x32 with 10 classes");
        fuzz_check_dataset(&ds);
    } else {
        static const data_dataset zero;
        if (memcmp(&ds, &zero, sizeof ds) != 0)
            fuzz_fail("a failed CIFAR-10 load left the dataset non-empty");
        if (!ag_last_error()[0])
            fuzz_fail("a failed CIFAR-10 load left no message");
    }
    data_dataset_deinit(&ds);
    return 0;
}

/* fuzz_h5_data.c — image/label arrays in HDF5 through data_h5_load.
 *
 * Input: a selector byte (which dataset names to ask for), then an HDF5 input as
 * fuzz_util.h describes (raw file bytes, or an h5spec program). */
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
    fuzz_h5_init();
    fuzz_h5_mark();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[][2] = {
        {"images", "labels"}, {"train/images", "train/labels"}, {"x", "y"}, {"images", ""}};
    if (size < 1)
        return 0;
    const char *const *pick = names[data[0] % 4];
    const char *path = fuzz_write_h5(0, data + 1, size - 1);

    data_dataset ds;
    ag_error_clear();
    ag_status st = data_h5_load(path, pick[0], pick[1], &ds);
    fuzz_report("data_h5_load", st == AG_OK ? NULL : ag_last_error());
    if (st == AG_OK) {
        fuzz_check_dataset(&ds);
    } else {
        static const data_dataset zero;
        if (memcmp(&ds, &zero, sizeof ds) != 0)
            fuzz_fail("a failed HDF5 data load left the dataset non-empty");
        if (!ag_last_error()[0])
            fuzz_fail("a failed HDF5 data load left no message");
    }
    data_dataset_deinit(&ds);
    fuzz_h5_check_closed("data_h5_load");
    return 0;
}

// libFuzzer target: any bytes given to SafetensorsFile::from_memory either parse or throw
// seer::Error, and every tensor of a parsed file can be read raw and, for float dtypes, converted.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const seer::SafetensorsFile file = seer::SafetensorsFile::from_memory({data, size});
    for (const seer::SafetensorsTensor& tensor : file.tensors()) {
      (void)file.data(tensor.name);
      if (tensor.dtype == seer::SafetensorsDtype::f32 || tensor.dtype == seer::SafetensorsDtype::f16 ||
          tensor.dtype == seer::SafetensorsDtype::bf16)
        (void)file.to_float(tensor.name);
    }
    (void)file.metadata();
  } catch (const seer::Error&) {
  }
  return 0;
}

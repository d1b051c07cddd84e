// libFuzzer target: any bytes given to GgufFile::from_memory either parse or throw seer::Error, and
// everything a parsed file offers (typed metadata reads, tensor data, dequantization) is safe.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/gguf.h"

namespace {

// Runs one accessor; a seer::Error (wrong type, out of range) is an expected outcome.
template <typename Read>
void attempt(Read read) {
  try {
    read();
  } catch (const seer::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const seer::GgufFile file = seer::GgufFile::from_memory({data, size});
    for (const std::string& key : file.metadata_keys()) {
      attempt([&] { (void)file.get_string(key); });
      attempt([&] { (void)file.get_int(key); });
      attempt([&] { (void)file.get_float(key); });
      attempt([&] { (void)file.get_bool(key); });
      attempt([&] { (void)file.get_string_array(key); });
      attempt([&] { (void)file.get_float_array(key); });
      attempt([&] { (void)file.get_int_array(key); });
    }
    for (const seer::GgufTensorInfo& tensor : file.tensors()) {
      (void)file.tensor_data(tensor);
      if (seer::ggml_traits(tensor.type).dequantizable) (void)file.dequantize(tensor);
    }
  } catch (const seer::Error&) {
  }
  return 0;
}

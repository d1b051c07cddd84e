// libFuzzer target: any bytes read as a gates file, for a small model and for one with the built-in
// model's head geometry, either load (the weights, int8 ones through their scales, and the
// calibrated budgets in the metadata) or throw seer::Error.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/gates.h"

namespace {

seer::LlamaConfig model(int layers, int q_heads, int kv_heads, int head_dim) {
  seer::LlamaConfig c;
  c.layers = layers;
  c.q_heads = q_heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const seer::LlamaConfig models[] = {model(2, 4, 2, 8), model(1, 9, 3, 64)};
  try {
    const seer::SafetensorsFile file = seer::SafetensorsFile::from_memory({data, size});
    for (const seer::LlamaConfig& c : models) {
      try {
        (void)seer::load_gates(file, c, "fuzz");
      } catch (const seer::Error&) {
      }
      try {
        (void)seer::load_gate_budgets(file, c.layers, "fuzz");
      } catch (const seer::Error&) {
      }
    }
  } catch (const seer::Error&) {
  }
  return 0;
}

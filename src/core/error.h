// Errors: every rejected input throws seer::Error with a message naming the problem.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace seer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}

}  // namespace seer

// SEER_CHECK(cond, "what", value, ...) throws seer::Error("what value ...") when cond is false.
#define SEER_CHECK(cond, ...)              \
  do {                                     \
    if (!(cond)) ::seer::fail(__VA_ARGS__); \
  } while (0)

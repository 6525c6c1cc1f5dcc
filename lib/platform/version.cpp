// pipeworks::version(): the version this library was built as.
#include <pipeworks/version.hpp>

namespace pipeworks {

const char* version() noexcept {
    return PIPEWORKS_VERSION_STRING;
}

}  // namespace pipeworks

// The statuses a co_await ends with when it ends early (task.hpp).
#include <pipeworks/task.hpp>

#include <string>

namespace pipeworks::detail {

Error interrupt_error(Interrupt why, std::string_view what) {
    const std::string w(what);
    switch (why) {
        case Interrupt::cancelled:
            return Error(errc::cancelled, w + ": the task was cancelled");
        case Interrupt::loop_closed:
            return Error(errc::loop_closed, w + ": the loop was destroyed while waiting");
        case Interrupt::deadline:
            break;
    }
    return Error(errc::deadline_passed, w + ": the deadline passed");
}

}  // namespace pipeworks::detail

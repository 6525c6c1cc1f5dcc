// Helpers shared by the suites: running a loop against a deadline, and small pipe utilities.
#pragma once

#include <pipeworks/pipeworks.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

namespace pw_test {

using namespace std::chrono_literals;

// The longest any single wait in a test may take: a hang fails here, not at the suite timeout.
inline constexpr std::chrono::milliseconds kDeadline{5000};

// Runs the loop until pred() holds; fails the test (with `what`) if the deadline passes first.
inline bool run_until(pipeworks::Loop& loop, const std::function<bool()>& pred,
                      const char* what = "condition",
                      std::chrono::milliseconds deadline = kDeadline) {
    bool ok = loop.run_until(pred, deadline);
    if (!ok) FAIL_CHECK("timed out waiting for: " << std::string(what));
    return ok;
}

// Runs the loop for a while (to show that something does NOT happen).
inline void run_for(pipeworks::Loop& loop, std::chrono::milliseconds d) {
    loop.run_until([] { return false; }, d);
}

// Runs the loop for `d`, calling `step` every 5 ms: a producer that keeps a pipe's write
// queue topped up while the test watches what the other side does.
inline void run_for(pipeworks::Loop& loop, std::chrono::milliseconds d,
                    const std::function<void()>& step) {
    for (auto end = std::chrono::steady_clock::now() + d; std::chrono::steady_clock::now() < end;) {
        step();
        run_for(loop, std::chrono::milliseconds(5));
    }
}

inline pipeworks::Address lo(pipeworks::Family f, std::uint16_t port = 0) {
    return pipeworks::Address::loopback(f, port);
}

// Bytes written as numbers, as the wire vectors are: bytes({0x05, 0x00, 0x02}).
inline std::string bytes(std::initializer_list<int> v) {
    std::string s;
    for (int b : v) s.push_back(static_cast<char>(b));
    return s;
}

// Whether an error's message says `what`.
inline bool mentions(const pipeworks::Error& e, std::string_view what) {
    return e.message.find(what) != std::string::npos;
}

// Unwraps a Result or fails the test with its error message.
template <class T>
T must(pipeworks::Result<T> r, const char* what = "operation") {
    if (!r) FAIL(std::string(what) << " failed: " << r.error().message);
    return std::move(r).value();
}

}  // namespace pw_test

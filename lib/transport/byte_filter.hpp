// ByteFilter: the seam between a stream pipe's socket I/O and its input stage / write queue,
// where a transformation of the byte stream (TLS) sits. Without a filter (the identity, and
// the common case) bytes pass straight through and the pipe pays nothing for the seam.
//
// Threading: bound to its pipe's loop thread.
#pragma once

#include <pipeworks/error.hpp>

#include "../platform/function_ref.hpp"

#include <span>
#include <string>
#include <string_view>

namespace pipeworks::detail {

class ByteFilter {
public:
    // Both callbacks are called only during the incoming() call they are passed to.
    using PlainFn = FunctionRef<void(std::string_view)>;
    // A buffer for what the filter makes of a read; one call's buffer stays valid until the
    // next call (the pipe gives the loop's plaintext block, which a relay may keep).
    using BufferFn = FunctionRef<std::span<char>()>;

    virtual ~ByteFilter() = default;
    // Bytes read from the socket. Calls `plain` with what the input stage receives (any
    // number of times, also none), each time bytes in a buffer from `buffer`. An Error ends
    // the pipe.
    virtual Error incoming(std::string_view wire, BufferFn buffer, PlainFn plain) = 0;
    // The same with a buffer of the filter's own, on the stack.
    Error incoming(std::string_view wire, PlainFn plain) {
        char local[16 * 1024];
        auto buffer = [&] { return std::span<char>(local, sizeof local); };
        return incoming(wire, buffer, plain);
    }
    // Bytes the write queue sends: appends what goes to the socket to `wire`.
    virtual Error outgoing(std::string_view plain, std::string& wire) = 0;
    // Bytes the filter itself must send now (a handshake, a close notice), appended to `wire`.
    virtual void pending_output(std::string& wire) { (void)wire; }
    // Bytes the filter holds on their way out (plaintext waiting for a handshake, records not
    // yet taken by pending_output): they count as queued.
    virtual std::size_t buffered() const noexcept { return 0; }
    // Whether the filter may hold working buffers an idle pipe could give back.
    virtual bool holds_buffers() const noexcept { return false; }
    // The pipe has been idle for a while: give those buffers back if nothing is in them.
    virtual void release_buffers() noexcept {}
};

// The identity: what every stream pipe does without a filter, as a class (tests put it in the
// seam to show the data path through it is complete).
class IdentityFilter final : public ByteFilter {
public:
    using ByteFilter::incoming;
    Error incoming(std::string_view wire, BufferFn, PlainFn plain) override {
        if (!wire.empty()) plain(wire);
        return {};
    }
    Error outgoing(std::string_view plain, std::string& wire) override {
        wire.append(plain);
        return {};
    }
};

}  // namespace pipeworks::detail

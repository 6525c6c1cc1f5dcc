// Errors: every failure is a std::error_code plus a message naming the operation and address.
#pragma once

#include <pipeworks/export.hpp>

#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace pipeworks {

// Failures that are pipeworks' own (libuv's and the OS's travel in uv_category()).
enum class errc {
    invalid_config = 1,  // a NetConf field or an argument has a bad value
    not_supported_yet,   // the feature behind a field arrives in a later release
    invalid_address,     // an address string could not be parsed
    wrong_pipe_kind,     // the operation does not apply to this kind of pipe
    not_connected,       // no peer: UDP without destination, or an unconnected adopted socket
    pipe_ended,          // the pipe has ended; nothing more can be sent or received
    write_queue_full,    // queued write bytes would pass NetConf::max_write_queue
    connect_timeout,     // NetConf::con_timeout passed before the connection was made
    dns_timeout,         // a lookup's timeout (NetConf::dns_timeout) passed without an answer
    message_too_large,   // a datagram larger than UDP can carry
    queue_full,          // a bounded queue refused an element
    framing_error,       // received bytes break the pipe's Framer (length, header, delimiter)
    protocol_error,      // received packets break the packet protocol (PacketConnection)
    request_timeout,     // a request had no response within its timeout (PacketConnection)
    request_cancelled,   // a request was cancelled before its response (PacketConnection)
    close_timeout,       // close() gave up waiting: queued bytes were dropped and the
                         // connection reset (NetConf / PacketConf close_timeout)
    idle_timeout,        // nothing was received or sent for NetConf::idle_timeout
    frame_timeout,       // a frame that had started did not complete within NetConf::frame_timeout
    callback_threw,      // a callback of the pipe threw: the pipe ended (EndInfo::error says what)
    accept_failed,       // a server could not accept a connection (EMFILE...); it keeps serving
    tls_failed,          // the TLS layer refused the peer (handshake, certificate, bad record)
    tls_handshake_timeout,  // the TLS handshake did not complete within NetConf::ssl_handshake
    tls_truncated,          // the peer closed the TCP connection without TLS close_notify
    host_not_found,         // the name does not exist (NXDOMAIN)
    no_address,             // the name exists but has no address of the family asked
    dns_failed,             // resolution failed: server failure, refused, no server, bad name

    // The blocking facade (pipeworks::sync).
    blocking_on_loop_thread,  // a blocking call was made on a thread that runs a Loop, where
                              // waiting would stall that loop
    sync_timeout,             // a blocking call's timeout passed before its operation completed

    // Coroutines (task.hpp, await.hpp).
    cancelled,              // a co_await ended because its task was cancelled (task.hpp)
    loop_closed,            // a co_await ended because its Loop was destroyed (task.hpp)
    deadline_passed,        // a co_await ended because its co::deadline passed (await.hpp)
};

// The category of errc values ("pipeworks").
PIPEWORKS_API const std::error_category& pipeworks_category() noexcept;
// The category of libuv's negative error numbers ("uv"); messages come from uv_strerror.
PIPEWORKS_API const std::error_category& uv_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), pipeworks_category()};
}
// A libuv status (negative errno-like number) as an error_code; 0 gives an empty code.
inline std::error_code uv_error_code(int status) noexcept {
    return status == 0 ? std::error_code{} : std::error_code{status, uv_category()};
}

// An error value: a code for programs, a message for people. Empty (falsy) means success.
// [[nodiscard]]: a failed send() or open must not be ignored silently (cast to void on purpose).
struct [[nodiscard]] Error {
    std::error_code code;
    std::string message;

    Error() = default;
    Error(std::error_code c, std::string m) : code(c), message(std::move(m)) {}
    Error(errc e, std::string m) : code(make_error_code(e)), message(std::move(m)) {}

    explicit operator bool() const noexcept { return static_cast<bool>(code); }
    bool operator==(errc e) const noexcept { return code == make_error_code(e); }
};

// A value or an Error. Accessing the value of a failed Result throws std::system_error.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & {
        check();
        return std::get<0>(v_);
    }
    const T& value() const& {
        check();
        return std::get<0>(v_);
    }
    T&& value() && {
        check();
        return std::get<0>(std::move(v_));
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    // The error; an empty Error when ok().
    Error error() const { return ok() ? Error{} : std::get<1>(v_); }

private:
    void check() const {
        if (!ok()) {
            const Error& e = std::get<1>(v_);
            throw std::system_error(e.code, e.message);
        }
    }
    std::variant<T, Error> v_;
};

}  // namespace pipeworks

template <>
struct std::is_error_code_enum<pipeworks::errc> : std::true_type {};

#include <pipeworks/error.hpp>

#include <uv.h>

namespace pipeworks {
namespace {

class PipeworksCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "pipeworks"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::invalid_config:
                return "invalid configuration";
            case errc::not_supported_yet:
                return "not supported yet";
            case errc::invalid_address:
                return "invalid address";
            case errc::wrong_pipe_kind:
                return "operation not valid for this kind of pipe";
            case errc::not_connected:
                return "not connected";
            case errc::pipe_ended:
                return "pipe has ended";
            case errc::write_queue_full:
                return "write queue full";
            case errc::connect_timeout:
                return "connect timed out";
            case errc::dns_timeout:
                return "name resolution timed out";
            case errc::message_too_large:
                return "message too large";
            case errc::queue_full:
                return "queue full";
            case errc::framing_error:
                return "framing error";
            case errc::protocol_error:
                return "protocol error";
            case errc::request_timeout:
                return "no response within the request's timeout";
            case errc::request_cancelled:
                return "the request was cancelled";
            case errc::close_timeout:
                return "close timed out";
            case errc::idle_timeout:
                return "idle timeout";
            case errc::frame_timeout:
                return "frame timeout";
            case errc::callback_threw:
                return "a callback threw";
            case errc::accept_failed:
                return "accept failed";
            case errc::tls_failed:
                return "TLS failed";
            case errc::tls_handshake_timeout:
                return "TLS handshake timeout";
            case errc::tls_truncated:
                return "TLS stream truncated (no close_notify)";
            case errc::host_not_found:
                return "no such host";
            case errc::no_address:
                return "no address of the family asked";
            case errc::dns_failed:
                return "name resolution failed";
            case errc::blocking_on_loop_thread:
                return "blocking call on a loop thread";
            case errc::sync_timeout:
                return "blocking call timed out";
            case errc::cancelled:
                return "the task was cancelled";
            case errc::loop_closed:
                return "the loop was destroyed";
            case errc::deadline_passed:
                return "the deadline passed";
        }
        return "unknown pipeworks error";
    }
};

class UvCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "uv"; }
    std::string message(int ev) const override { return uv_strerror(ev); }
    std::error_condition default_error_condition(int ev) const noexcept override {
        // libuv codes are negated errno values on Unix, so they map onto the generic category.
        if (ev < 0 && ev > -3000) return {-ev, std::generic_category()};
        return {ev, *this};
    }
};

}  // namespace

const std::error_category& pipeworks_category() noexcept {
    static const PipeworksCategory c;
    return c;
}

const std::error_category& uv_category() noexcept {
    static const UvCategory c;
    return c;
}

}  // namespace pipeworks

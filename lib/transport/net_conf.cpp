#include <pipeworks/net_conf.hpp>

#include <netinet/in.h>

#include <limits>
#include <string>

namespace pipeworks {
namespace {

Error field(const char* name, const std::string& why) {
    return Error(errc::invalid_config, std::string("NetConf.") + name + ": " + why);
}

Error later(const char* name, const char* feature) {
    return Error(errc::not_supported_yet, std::string("NetConf.") + name + ": " + feature +
                                              " is not supported yet by this release");
}

}  // namespace

Error NetConf::validate(Transport transport) const {
    const NetConf defaults;
    if (use_ssl) return later("use_ssl", "TLS");
    if (ssl_handshake != defaults.ssl_handshake) return later("ssl_handshake", "TLS");
    if (dns_timeout.count() <= 0) return field("dns_timeout", "must be > 0 ms");
    if (recv_timeout.count() < 0) return field("recv_timeout", "must be >= 0 ms");
    if (con_timeout.count() <= 0) return field("con_timeout", "must be > 0 ms");
    if (sock_proto != 0) {
        int expected = transport == Transport::tcp ? IPPROTO_TCP : IPPROTO_UDP;
        if (sock_proto != expected)
            return field("sock_proto",
                         "must be 0 or " + std::to_string(expected) + " (" +
                             (transport == Transport::tcp ? "IPPROTO_TCP" : "IPPROTO_UDP") +
                             ") for a " + (transport == Transport::tcp ? "TCP" : "UDP") +
                             " pipe, got " + std::to_string(sock_proto));
    }
    if (enable_msg_ids) {
        if (transport != Transport::udp)
            return field("enable_msg_ids", "duplicate suppression applies to UDP pipes only");
        if (max_msg_ids == 0) return field("max_msg_ids", "must be > 0 when enable_msg_ids is set");
    }
    if (max_msg_ids > 10'000'000) return field("max_msg_ids", "must be <= 10000000");
    if (broadcast && transport != Transport::udp)
        return field("broadcast", "applies to UDP pipes only");
    if (reader_limit < 512 || reader_limit > 16 * 1024 * 1024)
        return field("reader_limit", "must be between 512 and 16777216 bytes");
    if (linger && linger->count() < 0) return field("linger", "must be >= 0 s");
    // SO_LINGER takes an int of seconds; more would be truncated.
    if (linger && linger->count() > std::numeric_limits<int>::max())
        return field("linger", "must be <= " + std::to_string(std::numeric_limits<int>::max()) +
                                   " s (SO_LINGER's limit)");
    if (linger && transport != Transport::tcp) return field("linger", "applies to TCP pipes only");
    if (send_retry < 0 || send_retry > 100) return field("send_retry", "must be from 0 to 100");
    if (keepalive && keepalive->count() <= 0) return field("keepalive", "must be > 0 s when set");
    // Linux refuses a TCP_KEEPIDLE above 32767 s.
    if (keepalive && keepalive->count() > 32767)
        return field("keepalive", "must be <= 32767 s (TCP_KEEPIDLE's limit)");
    if (keepalive && transport != Transport::tcp)
        return field("keepalive", "applies to TCP pipes only");
    if (high_watermark == 0) return field("high_watermark", "must be > 0");
    if (low_watermark > high_watermark)
        return field("low_watermark",
                     "must be <= high_watermark (" + std::to_string(high_watermark) + ")");
    if (max_write_queue != 0 && max_write_queue < high_watermark)
        return field("max_write_queue", "must be 0 (no cap) or >= high_watermark (" +
                                            std::to_string(high_watermark) + ")");
    if (max_accept_queue == 0) return field("max_accept_queue", "must be > 0");
    if (close_timeout.count() <= 0) return field("close_timeout", "must be > 0 ms");
    if (idle_timeout.count() < 0) return field("idle_timeout", "must be >= 0 ms (0: none)");
    if (frame_timeout.count() < 0) return field("frame_timeout", "must be >= 0 ms (0: none)");
    if (backlog <= 0) return field("backlog", "must be > 0");
    if (Error e = framer.validate(transport)) {
        // "Framer.length.width: ..." becomes "NetConf.framer.length.width: ...".
        std::string_view m = e.message;
        if (m.starts_with("Framer")) m.remove_prefix(6);
        return Error(e.code, "NetConf.framer" + std::string(m));
    }
    return {};
}

}  // namespace pipeworks

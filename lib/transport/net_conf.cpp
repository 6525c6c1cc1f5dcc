#include <pipeworks/net_conf.hpp>

#include <netinet/in.h>

#include <limits>
#include <string>

namespace pipeworks {
namespace {

Error field(const char* name, const std::string& why) {
    return Error(errc::invalid_config, std::string("NetConf.") + name + ": " + why);
}

Error validate_tls(const TlsConf& t) {
    if (!t.cert_file.empty() && !t.cert_pem.empty())
        return field("tls.cert_file", "set cert_file or cert_pem, not both");
    if (!t.key_file.empty() && !t.key_pem.empty())
        return field("tls.key_file", "set key_file or key_pem, not both");
    const bool cert = !t.cert_file.empty() || !t.cert_pem.empty();
    const bool key = !t.key_file.empty() || !t.key_pem.empty();
    if (cert != key)
        return field(cert ? "tls.key_file" : "tls.cert_file",
                     "a certificate and its private key go together: set both or neither");
    if (t.min_version != 0x0303 && t.min_version != 0x0304)
        return field("tls.min_version", "must be 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3)");
    if (t.alpn.size() > 32) return field("tls.alpn", "at most 32 protocols");
    for (const auto& p : t.alpn)
        if (p.empty() || p.size() > 255)
            return field("tls.alpn", "each protocol name must be 1 to 255 bytes");
    if (t.server_name.size() > 253) return field("tls.server_name", "must be at most 253 bytes");
    return {};
}

}  // namespace

Error NetConf::validate(Transport transport) const {
    const NetConf defaults;
    if (use_ssl) {
        if (transport != Transport::tcp) return field("use_ssl", "TLS applies to TCP pipes only");
        if (Error e = validate_tls(tls)) return e;
    }
    if (ssl_handshake.count() <= 0) return field("ssl_handshake", "must be > 0 ms");
    if (dns_timeout.count() <= 0) return field("dns_timeout", "must be > 0 ms");
    if (recv_timeout.count() < 0) return field("recv_timeout", "must be >= 0 ms");
    if (con_timeout.count() <= 0) return field("con_timeout", "must be > 0 ms");
    if (connect_retries < 0 || connect_retries > 1000)
        return field("connect_retries", "must be from 0 to 1000");
    if (retry_backoff.count() <= 0) return field("retry_backoff", "must be > 0 ms");
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
    if (bind_device.size() >= 16)  // IFNAMSIZ
        return field("bind_device", "an interface name is at most 15 bytes");
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

// Small socket helpers shared by the transport's parts: libuv status to end reason, socket
// names, socket options.
#pragma once

#include "transport/pipe_impl.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace pipeworks::detail {

inline PipeImpl* impl_of(uv_handle_t* h) {
    return static_cast<PipeImpl*>(h->data);
}

inline EndReason reason_for(int status) {
    switch (status) {
        case UV_EOF:
            return EndReason::peer_close;
        case UV_ECONNRESET:
        case UV_EPIPE:
            return EndReason::peer_reset;
        case UV_ETIMEDOUT:
            return EndReason::timeout;
        default:
            return EndReason::error;
    }
}

inline Address sockname(const uv_handle_t* h, bool peer) {
    sockaddr_storage ss{};
    int len = sizeof ss;
    int rc;
    if (h->type == UV_TCP) {
        auto* t = reinterpret_cast<const uv_tcp_t*>(h);
        rc = peer ? uv_tcp_getpeername(t, reinterpret_cast<sockaddr*>(&ss), &len)
                  : uv_tcp_getsockname(t, reinterpret_cast<sockaddr*>(&ss), &len);
    } else {
        auto* u = reinterpret_cast<const uv_udp_t*>(h);
        rc = peer ? uv_udp_getpeername(u, reinterpret_cast<sockaddr*>(&ss), &len)
                  : uv_udp_getsockname(u, reinterpret_cast<sockaddr*>(&ss), &len);
    }
    return rc == 0 ? Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)) : Address{};
}

inline int os_error() {
    return -errno;
}

// Largest payload of one datagram.
// An IPv4-mapped IPv6 destination (::ffff:a.b.c.d) travels as IPv4, so it has IPv4's limit.
inline std::size_t max_datagram(const Address& to) {
    if (!to.is_v6()) return 65507;
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(to.sockaddr());
    return IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) ? 65507 : 65527;
}

inline Error set_opt(int fd, int level, int name, int value, const char* what) {
    if (setsockopt(fd, level, name, &value, sizeof value) != 0)
        return Error(uv_error_code(-errno),
                     std::string("setsockopt ") + what + ": " + uv_strerror(-errno));
    return {};
}

// uv_udp_open sets SO_REUSEADDR on every socket it is given; this puts the socket's own value
// back, so NetConf::reuse_addr (or an adopted socket's owner) decides whether a port is shared.
inline int udp_open_keeping_reuse(uv_udp_t* u, int fd) {
    int reuse = 0;
    socklen_t len = sizeof reuse;
    bool known = getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) == 0;
    int rc = uv_udp_open(u, fd);
    if (rc == 0 && known) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    return rc;
}

}  // namespace pipeworks::detail

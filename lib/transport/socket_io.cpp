// Socket I/O: opening sockets (TCP, UDP, adopted), the libuv handle, reading, and the end of
// the read side.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pipeworks::detail {

Error PipeImpl::bound_socket(int type, Family family, const Address& local, int& fd) {
    fd = ::socket(family == Family::ipv6 ? AF_INET6 : AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  conf_->sock_proto);
    if (fd < 0) return uv_fail("socket", os_error());
    auto fail_fd = [&](Error e) {
        ::close(fd);
        fd = -1;
        return e;
    };
    // libuv would set SO_REUSEADDR on every bind; pipeworks makes it NetConf::reuse_addr.
    if (conf_->reuse_addr)
        if (auto e = set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")) return fail_fd(e);
    if (!conf_->bind_device.empty() &&
        ::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, conf_->bind_device.c_str(),
                     static_cast<socklen_t>(conf_->bind_device.size())) != 0) {
        const int err = os_error();
        return fail_fd(
            Error(uv_error_code(err), "NetConf.bind_device \"" + conf_->bind_device +
                                          "\": SO_BINDTODEVICE failed: " + uv_strerror(err) +
                                          (err == UV_EPERM ? " (it needs CAP_NET_RAW)" : "")));
    }
    if (type == SOCK_DGRAM && conf_->broadcast)
        if (auto e = set_opt(fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST")) return fail_fd(e);
    if (!local.empty() && ::bind(fd, local.sockaddr(), local.sockaddr_len()) != 0)
        return fail_fd(uv_fail("bind", os_error(), local));
    return {};
}

Error PipeImpl::open_tcp_socket(const Address& local, Family family, bool listening) {
    int fd = -1;
    if (Error e = bound_socket(SOCK_STREAM, family, local, fd)) return e;
    auto fail_fd = [&](Error e) {
        ::close(fd);
        return e;
    };
    int rc = uv_tcp_open(&h_.tcp, fd);
    if (rc != 0) return fail_fd(uv_fail("uv_tcp_open", rc));
    if (!listening) set_stream_options(&h_.tcp);
    if (!conf_->do_close) kept_fd_ = ::dup(fd);
    return {};
}

void PipeImpl::set_stream_options(uv_tcp_t* tcp) {
    if (conf_->nodelay) uv_tcp_nodelay(tcp, 1);
    if (conf_->keepalive)
        uv_tcp_keepalive(tcp, 1, static_cast<unsigned>(conf_->keepalive->count()));
}

void PipeImpl::discard_kept_fd() noexcept {
    if (kept_fd_ >= 0) ::close(kept_fd_);
    kept_fd_ = -1;
}

Error PipeImpl::open_udp(const Address& local_in, const Address& dest) {
    Address local = local_in;
    if (local.empty()) local = Address::any(dest.family(), 0);
    if (!dest.empty() && dest.family() != local.family())
        return Error(errc::invalid_address, "udp: local address " + local.to_string() +
                                                " and destination " + dest.to_string() +
                                                " are of different families");
    int fd = -1;
    if (Error e = bound_socket(SOCK_DGRAM, local.family(), local, fd)) return e;
    auto fail_fd = [&](Error e) {
        ::close(fd);
        return e;
    };
    int rc = udp_open_keeping_reuse(&h_.udp, fd);
    if (rc != 0) return fail_fd(uv_fail("uv_udp_open", rc));
    if (!conf_->do_close) kept_fd_ = ::dup(fd);
    local_ = sockname(&h_.handle, false);
    peer_ = dest;
    connected_ = true;
    opened();
    start_reading();
    schedule_up();
    return {};
}

Error PipeImpl::adopt_fd(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return uv_fail("adopt: getsockopt SO_TYPE", os_error());
    int domain = 0;
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain != AF_INET &&
        domain != AF_INET6)
        return Error(errc::wrong_pipe_kind,
                     "adopt: fd " + std::to_string(fd) + " is not an IPv4 or IPv6 socket");
    int acceptconn = 0;
    len = sizeof acceptconn;
    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acceptconn, &len);
    if (type == SOCK_STREAM && !acceptconn) {
        // Checked before libuv takes the fd, so the caller keeps it when it is refused.
        sockaddr_storage ss{};
        socklen_t ss_len = sizeof ss;
        if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &ss_len) != 0)
            return Error(errc::not_connected, "adopt: TCP socket " + std::to_string(fd) +
                                                  " is neither listening nor connected");
    }
    int use_fd = fd;
    if (!conf_->do_close) {
        // libuv closes the fd it holds; a duplicate lets the caller's fd outlive the pipe.
        use_fd = ::dup(fd);
        if (use_fd < 0) return uv_fail("adopt: dup", os_error());
        kept_fd_ = fd;
    }
    int rc;
    if (type == SOCK_STREAM) {
        kind_ = acceptconn ? PipeKind::tcp_server : PipeKind::tcp_client;
        implicit_sub_ = kind_ != PipeKind::tcp_server;
        uv_tcp_init(core_->loop, &h_.tcp);
        handle_inited_ = true;
        h_.handle.data = this;
        rc = uv_tcp_open(&h_.tcp, use_fd);
        if (rc != 0) return uv_fail("adopt: uv_tcp_open", rc);
        local_ = sockname(&h_.handle, false);
        if (kind_ == PipeKind::tcp_server) return start_listen();
        peer_ = sockname(&h_.handle, true);
        if (peer_.empty())
            return Error(errc::not_connected, "adopt: TCP socket " + std::to_string(fd) +
                                                  " is neither listening nor connected");
        set_stream_options(&h_.tcp);
        connected_ = true;
        opened();
        start_reading();
        schedule_up();
        return {};
    }
    if (type == SOCK_DGRAM) {
        kind_ = PipeKind::udp;
        uv_udp_init_ex(core_->loop, &h_.udp, AF_UNSPEC | UV_UDP_RECVMMSG);
        handle_inited_ = true;
        h_.handle.data = this;
        rc = udp_open_keeping_reuse(&h_.udp, use_fd);
        if (rc != 0) return uv_fail("adopt: uv_udp_open", rc);
        local_ = sockname(&h_.handle, false);
        peer_ = sockname(&h_.handle, true);
        udp_connected_ = !peer_.empty();
        connected_ = true;
        opened();
        start_reading();
        schedule_up();
        return {};
    }
    if (!conf_->do_close) ::close(use_fd);
    kept_fd_ = -1;
    return Error(errc::wrong_pipe_kind,
                 "adopt: fd " + std::to_string(fd) + " is not a stream or datagram socket");
}

void PipeImpl::schedule_up() {
    // Up fires on the next iteration, so callbacks added right after opening see it.
    std::weak_ptr<PipeImpl> weak = self_;
    up_timer_ = loop_->call_later(std::chrono::milliseconds(0), [weak] {
        auto p = weak.lock();
        if (!p || p->ending()) return;
        p->guarded("up",
                   [&] { p->up_cbs_.call([&] { return p->ending(); }, static_cast<Pipe&>(*p)); });
    });
}

// ---------------------------------------------------------------- reading

void PipeImpl::start_reading() {
    // A TLS pipe closed before its handshake finished still reads: the handshake must complete
    // for what was sent to go out.
    const bool handshaking = tls_ && !tls_->established && life_ == Life::draining;
    if (reading_ || (ending() && !handshaking) || !connected_ || conf_->sock_only || read_held())
        return;
    if (kind_ == PipeKind::tcp_server) return;
    if (kind_ == PipeKind::udp) {
        int rc = uv_udp_recv_start(
            &h_.udp,
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                // Several 64 KiB slots let libuv receive a batch with recvmmsg.
                constexpr std::size_t size = 8 * 64 * 1024;
                buf->base = impl_of(h)->core_->read_buffer(size);
                buf->len = size;
            },
            [](uv_udp_t* u, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
               unsigned flags) {
                impl_of(reinterpret_cast<uv_handle_t*>(u))->on_udp_read(nread, buf, addr, flags);
            });
        if (rc != 0) {
            end(EndReason::error, uv_fail("udp receive on", rc, local_), Drain::now);
            return;
        }
    } else {
        int rc = uv_read_start(
            &h_.stream,
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                auto* p = impl_of(h);
                buf->base = p->core_->read_buffer(p->conf_->reader_limit);
                buf->len = p->conf_->reader_limit;
            },
            [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                impl_of(reinterpret_cast<uv_handle_t*>(s))->on_read(nread, buf);
            });
        if (rc != 0) {
            end(reason_for(rc), uv_fail("read from", rc, peer_), Drain::now);
            return;
        }
    }
    reading_ = true;
}

void PipeImpl::stop_reading() {
    if (!reading_) return;
    reading_ = false;
    if (kind_ == PipeKind::udp)
        uv_udp_recv_stop(&h_.udp);
    else
        uv_read_stop(&h_.stream);
}

void PipeImpl::on_read(ssize_t nread, const uv_buf_t* buf) {
    if (nread > 0) {
        last_activity_ms_ = uv_now(core_->loop);
        // Replies a pipe makes to its own read leave in one write right after it, without a
        // trip through the loop's flush list.
        read_data_ = std::string_view(buf->base, static_cast<std::size_t>(nread));
        in_read_ = true;
        if (filter_) [[unlikely]] {
            auto buffer = [this] {
                // The block is reused: what an echo borrowed from it is copied first.
                if (!borrowed_.empty()) unborrow();
                const std::size_t size = conf_->reader_limit;
                return std::span<char>(core_->plain_buffer(size), size);
            };
            auto plain = [this](std::string_view bytes) {
                if (ending()) return;
                // An echo of the plaintext is borrowed from its block, as of a plain read.
                read_data_ = bytes;
                input(bytes, peer_);
            };
            Error e = filter_->incoming(read_data_, buffer, plain);
            if (e && !ending()) {
                if (tls_)
                    tls_fail(std::move(e));
                else
                    end(EndReason::error, std::move(e), Drain::now);
            }
            if (tls_) tls_after_read();
            // The filter's buffers go back once reads and writes have stopped for a while.
            if (queued_bytes() == 0 && !write_in_flight_) release_idle_buffers();
        } else {
            input(read_data_, peer_);
        }
        in_read_ = false;
        // A filter may owe the peer bytes of its own (a handshake reply) after any read.
        if ((!pending_.empty() || !borrowed_.empty() || filter_) && !closing()) {
            if (flush_scheduled) core_->cancel_flush(this);  // by a send outside the read
            flush();
        }
        // Not written (a write in flight, a close): keep a copy, the read buffer is reused.
        if (!borrowed_.empty()) unborrow();
        return;
    }
    if (nread < 0) read_failed(static_cast<int>(nread));
}

void PipeImpl::read_failed(int status) {
    const EndReason r = reason_for(status);
    if (r != EndReason::peer_close) {
        end(r, uv_fail("read from", status, peer_), Drain::now);
        return;
    }
    if (tls_) [[unlikely]] {
        tls_eof();
        return;
    }
    read_eof_ = true;
    bytes_out_at_eof_ = bytes_out_;
    stop_reading();
    finish_input();
}

void PipeImpl::finish_input() {
    if (eof_delivered_ || paused_ || ending()) return;  // resume() comes back here
    // Messages a pause or a framer switch kept go first, in order.
    if (has_kept()) {
        deliver_kept();
        if (ending() || paused_ || eof_delivered_) return;
    }
    if (std::size_t held = decoder_ ? decoder_->buffered() : 0; held > 0) {
        end_framing("the stream ended inside a frame (" + std::to_string(held) +
                        " bytes of an incomplete frame received)",
                    held);
        return;
    }
    eof_delivered_ = true;
    if (in_relay()) {
        on_relay_fin();  // a relay passes the FIN on and keeps the other direction
        return;
    }
    wake_waiters_finished();
    if (ending()) return;
    if (eof_cbs_.empty()) {
        // Nobody takes the half-close: finish writing what is queued, then end.
        end(EndReason::peer_close, {}, Drain::graceful);
        return;
    }
    guarded("eof", [&] { eof_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this)); });
    maybe_finish();
}

void PipeImpl::on_udp_read(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                           unsigned flags) {
    if (nread < 0) {
        ++dropped_;  // e.g. ICMP errors: a UDP pipe outlives them
        return;
    }
    if (addr == nullptr) return;  // end of a batch, or nothing read
    if (flags & UV_UDP_PARTIAL) {
        ++dropped_;
        return;
    }
    last_activity_ms_ = uv_now(core_->loop);
    input(std::string_view(buf->base, static_cast<std::size_t>(nread)),
          Address::from_sockaddr(addr));
}

}  // namespace pipeworks::detail

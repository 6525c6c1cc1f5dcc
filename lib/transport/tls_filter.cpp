#include "transport/tls_filter.hpp"

#include "transport/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace pipeworks::detail {

namespace {

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// OpenSSL's error queue is per thread and outlives a call: what one pipe (or the application)
// left must not be blamed on the next, and SSL_get_error reads any entry as a failure of the
// call just made. Looking is cheaper than clearing all sixteen slots, and the queue is almost
// always empty.
void clear_errors() noexcept {
    if (ERR_peek_error() != 0) ERR_clear_error();
}
// Around the rare calls: nothing they leave stays behind.
struct ClearErrors {
    ClearErrors() { clear_errors(); }
    ~ClearErrors() { clear_errors(); }
};

}  // namespace

// The BIO between OpenSSL and the filter. It never fails and never blocks a write; a read
// with nothing left asks OpenSSL to retry (SSL_ERROR_WANT_READ), never signals an end.
struct TlsBio {
    static int write(BIO* b, const char* data, std::size_t len, std::size_t* written) {
        auto* f = static_cast<TlsFilter*>(BIO_get_data(b));
        (f->out_ != nullptr ? *f->out_ : f->held_).append(data, len);
        *written = len;
        return 1;
    }
    static int read(BIO* b, char* buf, std::size_t len, std::size_t* got) {
        auto* f = static_cast<TlsFilter*>(BIO_get_data(b));
        BIO_clear_retry_flags(b);
        if (f->in_.empty()) {
            BIO_set_retry_read(b);
            *got = 0;
            return 0;
        }
        const std::size_t n = std::min(len, f->in_.size());
        std::memcpy(buf, f->in_.data(), n);
        f->in_.remove_prefix(n);
        *got = n;
        return 1;
    }
    static long ctrl(BIO* b, int cmd, long, void*) {
        auto* f = static_cast<TlsFilter*>(BIO_get_data(b));
        switch (cmd) {
            case BIO_CTRL_FLUSH:
                return 1;
            case BIO_CTRL_PENDING:
                return static_cast<long>(f->in_.size());
            case BIO_CTRL_WPENDING:
                return 0;
            default:
                return 0;
        }
    }
    static int create(BIO* b) {
        BIO_set_init(b, 1);
        return 1;
    }

    // One method table for the process, made on first use (thread-safe) and freed at exit.
    static const BIO_METHOD* method() {
        struct Method {
            BIO_METHOD* m = nullptr;
            Method() {
                m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pipeworks-tls");
                if (m == nullptr) return;
                BIO_meth_set_write_ex(m, write);
                BIO_meth_set_read_ex(m, read);
                BIO_meth_set_ctrl(m, ctrl);
                BIO_meth_set_create(m, create);
            }
            ~Method() { BIO_meth_free(m); }
        };
        static const Method method;
        return method.m;
    }
};

TlsFilter::TlsFilter(SSL_CTX* ctx, TlsRole role, const std::string& sni_host,
                     const std::string& verify_host, const std::string& session_key,
                     SSL_SESSION* session) {
    ClearErrors clear;
    // SSL_new holds its own reference to the context: the caller may free its one.
    ssl_ = SSL_new(ctx);
    const BIO_METHOD* method = TlsBio::method();
    BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
    if (ssl_ == nullptr || bio == nullptr) {
        BIO_free(bio);
        SSL_free(ssl_);
        ssl_ = nullptr;
        failed_ = true;
        error_ = Error(errc::tls_failed, "TLS setup failed: out of memory");
        return;
    }
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: the SSL takes its one reference
    if (role == TlsRole::server) {
        SSL_set_accept_state(ssl_);
        return;
    }
    SSL_set_connect_state(ssl_);
    // RFC 6066 allows only host names as a server name, never an address literal.
    if (!sni_host.empty() && !is_ip_literal(sni_host) &&
        SSL_set_tlsext_host_name(ssl_, sni_host.c_str()) != 1) {
        (void)failure("setup (server name)", SSL_ERROR_SSL);
        return;
    }
    if (!verify_host.empty()) {
        const bool ok =
            is_ip_literal(verify_host)
                ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), verify_host.c_str()) == 1
                : SSL_set1_host(ssl_, verify_host.c_str()) == 1;
        if (!ok) {
            (void)failure("setup (verify host)", SSL_ERROR_SSL);
            return;
        }
    }
    if (!session_key.empty())
        SSL_set_ex_data(ssl_, TlsContext::session_key_index(), new std::string(session_key));
    if (session != nullptr) SSL_set_session(ssl_, session);  // takes its own reference
    // The ClientHello waits in the write BIO for the pipe's first flush.
    error_ = drive_handshake();
}

TlsFilter::~TlsFilter() {
    SSL_free(ssl_);  // frees the BIO with it
}

Error TlsFilter::incoming(std::string_view wire, BufferFn buffer, PlainFn plain) {
    if (failed_) return error_;
    // Only before: a failure empties the queue itself (failure()), and a call that succeeds
    // leaves nothing in it. This runs for every read, so each look counts.
    clear_errors();
    // OpenSSL keeps a partial record in its own buffer, so nothing of `wire` outlives the call.
    struct Window {
        TlsFilter& f;
        ~Window() { f.in_ = {}; }
    } window{*this};
    in_ = wire;
    maybe_holds_buffers_ = true;
    if (!handshake_done_) {
        if (Error e = drive_handshake()) return e;
        if (!handshake_done_) return {};
    }
    if (peer_closed_) return {};
    // Records are decrypted one after the other into one buffer and passed on together: the
    // layers above see a read's worth at a time, as without TLS.
    std::span<char> out;
    std::size_t used = 0;
    auto pass_on = [&] {
        if (used > 0) plain(std::string_view(out.data(), used));
        used = 0;
    };
    for (;;) {
        if (used == out.size()) {
            pass_on();
            out = buffer();
            if (out.empty()) return failure("read (no buffer)", SSL_ERROR_SSL);
        }
        std::size_t n = 0;
        const int rc = SSL_read_ex(ssl_, out.data() + used, out.size() - used, &n);
        if (rc == 1) {
            used += n;
            // With every byte of the read taken and nothing kept in OpenSSL's buffers, one
            // more call could only ask for more: it and its SSL_get_error are skipped, once
            // per read.
            if (in_.empty() && SSL_has_pending(ssl_) == 0) {
                pass_on();
                return {};
            }
            continue;
        }
        const int err = SSL_get_error(ssl_, rc);
        pass_on();  // what came before an alert or a bad record is the peer's data
        if (err == SSL_ERROR_WANT_READ) return {};
        if (err == SSL_ERROR_ZERO_RETURN) {
            peer_closed_ = true;
            return {};
        }
        return failure("read", err);
    }
}

Error TlsFilter::outgoing(std::string_view plain, std::string& wire) {
    if (failed_) return error_;
    drain(wire);
    if (!handshake_done_) {
        early_.append(plain);
        return {};
    }
    clear_errors();  // only before, as in incoming()
    maybe_holds_buffers_ = true;
    out_ = &wire;
    Error e = write_plain(plain);
    out_ = nullptr;
    return e;
}

void TlsFilter::pending_output(std::string& wire) {
    drain(wire);
}

std::size_t TlsFilter::buffered() const noexcept {
    return early_.size() + held_.size();
}

void TlsFilter::release_buffers() noexcept {
    // Only between records: a partial record in the read buffer stays where it is (freeing
    // it there was CVE-2024-4741 before OpenSSL 3.0.14). A handshake keeps its buffers; its
    // timeout bounds it.
    if (ssl_ == nullptr || failed_ || !handshake_done_ || SSL_has_pending(ssl_) == 1) return;
    ClearErrors clear;
    if (SSL_free_buffers(ssl_) == 1) maybe_holds_buffers_ = false;
}

TlsInfo TlsFilter::info() const {
    TlsInfo i;
    i.enabled = true;
    i.established = handshake_done_;
    if (ssl_ == nullptr || !handshake_done_) return i;
    i.resumed = SSL_session_reused(ssl_) == 1;
    i.version = SSL_get_version(ssl_);
    if (const char* c = SSL_get_cipher_name(ssl_)) i.cipher = c;
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    if (alpn != nullptr) i.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    X509* peer = SSL_get0_peer_certificate(ssl_);
    i.verified = peer != nullptr && (SSL_get_verify_mode(ssl_) & SSL_VERIFY_PEER) != 0 &&
                 SSL_get_verify_result(ssl_) == X509_V_OK;
    if (peer != nullptr) {
        char buf[512];
        if (X509_NAME_oneline(X509_get_subject_name(peer), buf, sizeof buf) != nullptr)
            i.peer_subject = buf;
    }
    return i;
}

void TlsFilter::close_notify() {
    // Before the handshake there is no session to close; the transport's end says enough.
    if (failed_ || !handshake_done_) return;
    ClearErrors clear;
    (void)SSL_shutdown(ssl_);
}

Error TlsFilter::drive_handshake() {
    const int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
        const int err = SSL_get_error(ssl_, rc);
        if (err == SSL_ERROR_WANT_READ) return {};
        return failure("handshake", err);
    }
    handshake_done_ = true;
    // What was sent during the handshake goes first: the established callback may send, or
    // shut the write side, after it.
    if (!early_.empty()) {
        std::string early;
        early.swap(early_);
        if (Error e = write_plain(early)) return e;
    }
    if (on_established) on_established();
    return {};
}

Error TlsFilter::write_plain(std::string_view plain) {
    // The BIO takes every record, so SSL_write_ex never waits for the socket; the loop is for
    // the small records at the start.
    while (!plain.empty()) {
        std::size_t chunk = plain.size();
        if (plain_out_ < kSmallRecordBytes) chunk = std::min(chunk, kSmallRecord);
        std::size_t n = 0;
        const int rc = SSL_write_ex(ssl_, plain.data(), chunk, &n);
        if (rc != 1) return failure("write", SSL_get_error(ssl_, rc));
        plain.remove_prefix(n);
        plain_out_ += n;
    }
    return {};
}

void TlsFilter::drain(std::string& wire) {
    if (held_.empty()) return;
    wire.append(held_);
    // Held bytes are few (a handshake flight, a ticket, an alert): no capacity worth keeping.
    std::string().swap(held_);
}

Error TlsFilter::failure(const char* op, int ssl_error) {
    failed_ = true;
    std::string what = std::string("TLS ") + op + " failed: ";
    if (ssl_error == SSL_ERROR_SSL) {
        const unsigned long code = ERR_peek_last_error();
        const char* reason = code != 0 ? ERR_reason_error_string(code) : nullptr;
        if (reason != nullptr) {
            what += reason;
        } else if (code != 0) {
            char buf[256];
            ERR_error_string_n(code, buf, sizeof buf);
            what += buf;
        } else {
            what += "protocol error";
        }
    } else if (ssl_error == SSL_ERROR_SYSCALL) {
        what += "unexpected end of the TLS stream";
    } else {
        what += "SSL_get_error " + std::to_string(ssl_error);
    }
    if (ssl_ != nullptr) {
        const long verify = SSL_get_verify_result(ssl_);
        if (verify != X509_V_OK) {
            what += " (";
            what += X509_verify_cert_error_string(verify);
            what += ")";
        }
    }
    error_ = Error(errc::tls_failed, std::move(what));
    ERR_clear_error();  // read now: the next call on this thread starts with an empty queue
    return error_;
}

}  // namespace pipeworks::detail

// TlsFilter: TLS as a byte filter. OpenSSL never sees the socket, so the pipe's own I/O,
// deadlines and backpressure stay what they are without TLS; the filter only turns wire bytes
// into plaintext and back. Its BIO is a window, not a buffer: OpenSSL reads records straight
// from the bytes the socket read gave incoming(), and writes them straight into the caller's
// wire string, so each byte is copied once on each side (a memory BIO copies it twice).
//
// Threading: bound to its pipe's loop thread.
#pragma once

#include <pipeworks/tls.hpp>

#include "transport/byte_filter.hpp"

#include <openssl/ssl.h>

#include <cstdint>
#include <string>

namespace pipeworks::detail {

enum class TlsRole : std::uint8_t { client, server };

class TlsFilter final : public ByteFilter {
public:
    // Takes a reference to `ctx`. A client sends `sni_host` as its server name and, when
    // `verify_host` is set, checks the certificate against it (a host name or an IP address);
    // whether the chain is checked at all is the context's SSL_VERIFY_PEER.
    // A client given `session` (referenced for the filter) offers to resume it; with a
    // `session_key`, the sessions the server issues are kept under that key (TlsContext).
    TlsFilter(SSL_CTX* ctx, TlsRole role, const std::string& sni_host = {},
              const std::string& verify_host = {}, const std::string& session_key = {},
              SSL_SESSION* session = nullptr);
    ~TlsFilter() override;
    TlsFilter(const TlsFilter&) = delete;
    TlsFilter& operator=(const TlsFilter&) = delete;

    using ByteFilter::incoming;
    Error incoming(std::string_view wire, BufferFn buffer, PlainFn plain) override;
    Error outgoing(std::string_view plain, std::string& wire) override;
    void pending_output(std::string& wire) override;
    std::size_t buffered() const noexcept override;
    bool holds_buffers() const noexcept override { return maybe_holds_buffers_; }
    void release_buffers() noexcept override;

    // Runs once, inside incoming(), when the handshake completes: before any plaintext of
    // the same read is passed on.
    std::function<void()> on_established;

    // Queues a close_notify alert; it leaves with the next pending_output().
    void close_notify();
    bool handshake_done() const noexcept { return handshake_done_; }
    // The peer sent close_notify: no more plaintext comes.
    bool peer_closed() const noexcept { return peer_closed_; }
    bool failed() const noexcept { return failed_; }
    // What the session is (version, cipher, ALPN, resumption, verification, peer).
    TlsInfo info() const;

    // The first kSmallRecordBytes of plaintext go in records of kSmallRecord bytes, each of
    // which fits one TCP segment: a new connection's first flight (its initial congestion
    // window is about ten segments) is then readable record by record as it arrives, instead
    // of waiting for a 16 KiB record spread over a dozen segments. Full records after that.
    static constexpr std::size_t kSmallRecord = 1400;
    static constexpr std::size_t kSmallRecordBytes = 16 * 1024;

private:
    friend struct TlsBio;
    Error drive_handshake();
    Error write_plain(std::string_view plain);
    void drain(std::string& wire);
    Error failure(const char* op, int ssl_error);

    SSL* ssl_ = nullptr;
    // What the BIO serves OpenSSL's reads from: the rest of incoming()'s wire bytes.
    std::string_view in_;
    // Where the BIO puts the records OpenSSL writes: the caller's wire string while one is
    // given, else held_ (a handshake reply, a ticket or an alert made inside incoming()).
    std::string* out_ = nullptr;
    std::string held_;
    // Plaintext sent before the handshake finished; an SSL_write then would run the handshake
    // from the write path, where its errors and the peer's replies have no place to go.
    std::string early_;
    std::uint64_t plain_out_ = 0;  // plaintext bytes written, for the small records
    bool handshake_done_ = false;
    bool peer_closed_ = false;
    // OpenSSL's record buffers (about 17 KiB each way) may be allocated: set by every use,
    // cleared when they are given back.
    bool maybe_holds_buffers_ = true;
    bool failed_ = false;
    Error error_;  // the failure every later call repeats
};

}  // namespace pipeworks::detail

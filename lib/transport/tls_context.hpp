// TlsContext: one SSL_CTX made from a TlsConf, shared by every pipe on a loop that has the same
// settings and role. Loading a trust store costs milliseconds, so it happens once per settings,
// not once per connection; a client context also keeps the sessions that let a reconnect
// resume.
//
// Threading: bound to its loop's thread (the cache lives in the loop).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/tls.hpp>

#include "transport/tls_filter.hpp"

#include <openssl/ssl.h>

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

namespace pipeworks::detail {

struct LoopCore;

class TlsContext {
public:
    // The loop's context for these settings and role, made on first use. Errors name the
    // NetConf.tls field and OpenSSL's reason ("NetConf.tls.cert_file: cannot load ...").
    static Result<std::shared_ptr<TlsContext>> get(LoopCore& core, const TlsConf& conf,
                                                   TlsRole role);
    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    SSL_CTX* ctx() const noexcept { return ctx_; }
    TlsRole role() const noexcept { return role_; }
    bool verifies() const noexcept { return verify_; }
    bool resumes() const noexcept { return resume_; }

    // Clients: the session last issued for `key` (name and port), referenced for the caller
    // (SSL_SESSION_free it), or null.
    SSL_SESSION* session_for(const std::string& key) const;
    // Clients: keeps `s` (takes the caller's reference) as the session for `key`.
    void keep_session(const std::string& key, SSL_SESSION* s);

    // The ex_data index under which an SSL carries its session key (a std::string*).
    static int session_key_index();

private:
    TlsContext(SSL_CTX* ctx, TlsRole role, bool verify, bool resume)
        : ctx_(ctx), role_(role), verify_(verify), resume_(resume) {}
    static Result<std::shared_ptr<TlsContext>> make(const TlsConf& conf, TlsRole role);

    SSL_CTX* ctx_;
    TlsRole role_;
    bool verify_;
    bool resume_;
    std::unordered_map<std::string, SSL_SESSION*> sessions_;
    std::deque<std::string> session_order_;  // oldest first: the cache has a bound
    std::vector<unsigned char>
        alpn_wire_;  // servers: the ALPN list, as the select callback reads it
};

}  // namespace pipeworks::detail

// TlsContext: SSL_CTX setup from a TlsConf (certificates, trust, verification, versions, ALPN,
// tickets) and the loop's cache of contexts.
#include "transport/tls_context.hpp"

#include "platform/loop_core.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace pipeworks::detail {

namespace {

constexpr std::size_t kMaxContexts = 64;    // distinct settings per loop
constexpr std::size_t kMaxSessions = 1024;  // resumable (name, port) pairs per context

struct Cache {
    std::unordered_map<std::string, std::shared_ptr<TlsContext>> by_key;
};

std::string openssl_reason() {
    const unsigned long code = ERR_peek_last_error();
    if (code == 0) return "unknown OpenSSL error";
    if (const char* r = ERR_reason_error_string(code)) return r;
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    return buf;
}

Error conf_error(const char* field, const std::string& what) {
    Error e(errc::invalid_config,
            std::string("NetConf.tls.") + field + ": " + what + " (" + openssl_reason() + ")");
    ERR_clear_error();
    return e;
}

struct BioFree {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr pem_bio(const std::string& pem) {
    return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

Error use_cert_pem(SSL_CTX* ctx, const std::string& pem) {
    BioPtr bio = pem_bio(pem);
    X509* leaf = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (leaf == nullptr) return conf_error("cert_pem", "no PEM certificate in it");
    const int ok = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (ok != 1) return conf_error("cert_pem", "the certificate was refused");
    // The rest of the text is the chain, leaf's issuer first.
    while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            return conf_error("cert_pem", "a chain certificate was refused");
        }
    }
    ERR_clear_error();  // the end of the text reads as "no start line"
    return {};
}

Error use_key_pem(SSL_CTX* ctx, const std::string& pem) {
    BioPtr bio = pem_bio(pem);
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (key == nullptr) return conf_error("key_pem", "no PEM private key in it");
    const int ok = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (ok != 1) return conf_error("key_pem", "the key was refused");
    return {};
}

Error trust_pem(SSL_CTX* ctx, const std::string& pem) {
    BioPtr bio = pem_bio(pem);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    int added = 0;
    while (X509* ca = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr) {
        const int ok = X509_STORE_add_cert(store, ca);
        X509_free(ca);
        if (ok != 1) return conf_error("ca_pem", "a certificate was refused");
        ++added;
    }
    if (added == 0) return conf_error("ca_pem", "no PEM certificate in it");
    ERR_clear_error();
    return {};
}

// Servers: the first protocol of the server's list that the client offered.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
    const auto* mine = static_cast<const std::vector<unsigned char>*>(arg);
    unsigned char* chosen = nullptr;
    if (SSL_select_next_proto(&chosen, outlen, mine->data(), static_cast<unsigned>(mine->size()),
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol (RFC 7301)
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

int new_session(SSL* ssl, SSL_SESSION* s) {
    auto* key = static_cast<std::string*>(SSL_get_ex_data(ssl, TlsContext::session_key_index()));
    auto* self = static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    if (key == nullptr || self == nullptr || key->empty()) return 0;
    self->keep_session(*key, s);
    return 1;  // the reference is ours now
}

std::string cache_key(const TlsConf& c, TlsRole role) {
    std::string k(1, role == TlsRole::client ? 'c' : 's');
    for (const std::string* s :
         {&c.cert_file, &c.key_file, &c.cert_pem, &c.key_pem, &c.ca_file, &c.ca_dir, &c.ca_pem}) {
        k += std::to_string(s->size()) + ':' + *s;
    }
    for (const auto& p : c.alpn) k += std::to_string(p.size()) + ';' + p;
    k += c.require_client_cert ? 'R' : 'r';
    k += c.session_resumption ? 'T' : 't';
    k += c.insecure_skip_verify ? 'I' : 'i';
    k += std::to_string(c.min_version);
    return k;
}

}  // namespace

int TlsContext::session_key_index() {
    static const int index = SSL_get_ex_new_index(
        0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
            delete static_cast<std::string*>(ptr);
        });
    return index;
}

Result<std::shared_ptr<TlsContext>> TlsContext::get(LoopCore& core, const TlsConf& conf,
                                                    TlsRole role) {
    if (!core.tls_contexts) core.tls_contexts = std::make_shared<Cache>();
    auto& cache = static_cast<Cache*>(core.tls_contexts.get())->by_key;
    std::string key = cache_key(conf, role);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    auto made = make(conf, role);
    if (!made) return made;
    // The pipes using a context hold it; the cache only spares the next pipe a reload.
    if (cache.size() >= kMaxContexts) cache.clear();
    cache.emplace(std::move(key), *made);
    return made;
}

Result<std::shared_ptr<TlsContext>> TlsContext::make(const TlsConf& conf, TlsRole role) {
    ERR_clear_error();
    SSL_CTX* ctx = SSL_CTX_new(role == TlsRole::client ? TLS_client_method() : TLS_server_method());
    if (ctx == nullptr)
        return Error(errc::tls_failed, "TLS setup failed: SSL_CTX_new (" + openssl_reason() + ")");
    const bool verify =
        role == TlsRole::client ? !conf.insecure_skip_verify : conf.require_client_cert;
    std::shared_ptr<TlsContext> self(new TlsContext(ctx, role, verify, conf.session_resumption));
    SSL_CTX_set_app_data(ctx, self.get());
    SSL_CTX_set_min_proto_version(ctx, conf.min_version);
    // No SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the record buffers for nearly
    // every record (8 % of a small-message echo's instructions). A pipe gives them back
    // itself once it has been idle (PipeImpl::release_idle_buffers). Compression is off
    // (CRIME).
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);

    if (!conf.cert_file.empty() &&
        SSL_CTX_use_certificate_chain_file(ctx, conf.cert_file.c_str()) != 1)
        return conf_error("cert_file", "cannot load \"" + conf.cert_file + "\"");
    if (!conf.cert_pem.empty())
        if (Error e = use_cert_pem(ctx, conf.cert_pem)) return e;
    if (!conf.key_file.empty() &&
        SSL_CTX_use_PrivateKey_file(ctx, conf.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        return conf_error("key_file", "cannot load \"" + conf.key_file + "\"");
    if (!conf.key_pem.empty())
        if (Error e = use_key_pem(ctx, conf.key_pem)) return e;
    const bool has_cert = !conf.cert_file.empty() || !conf.cert_pem.empty();
    if (has_cert && SSL_CTX_check_private_key(ctx) != 1)
        return conf_error(conf.key_file.empty() ? "key_pem" : "key_file",
                          "the private key does not match the certificate");
    if (role == TlsRole::server && !has_cert)
        return Error(errc::invalid_config,
                     "NetConf.tls.cert_file: a TLS server needs a certificate and its key "
                     "(cert_file/key_file or cert_pem/key_pem)");

    if (verify) {
        if (conf.ca_file.empty() && conf.ca_dir.empty() && conf.ca_pem.empty()) {
            if (SSL_CTX_set_default_verify_paths(ctx) != 1)
                return conf_error("ca_file", "cannot load the system's trust store");
        } else {
            if ((!conf.ca_file.empty() || !conf.ca_dir.empty()) &&
                SSL_CTX_load_verify_locations(
                    ctx, conf.ca_file.empty() ? nullptr : conf.ca_file.c_str(),
                    conf.ca_dir.empty() ? nullptr : conf.ca_dir.c_str()) != 1)
                return conf_error(
                    conf.ca_file.empty() ? "ca_dir" : "ca_file",
                    "cannot load \"" + (conf.ca_file.empty() ? conf.ca_dir : conf.ca_file) + "\"");
            if (!conf.ca_pem.empty())
                if (Error e = trust_pem(ctx, conf.ca_pem)) return e;
        }
        SSL_CTX_set_verify(ctx,
                           role == TlsRole::client
                               ? SSL_VERIFY_PEER
                               : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           nullptr);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    }

    if (!conf.alpn.empty()) {
        for (const auto& p : conf.alpn) {
            self->alpn_wire_.push_back(static_cast<unsigned char>(p.size()));
            self->alpn_wire_.insert(self->alpn_wire_.end(), p.begin(), p.end());
        }
        if (role == TlsRole::client) {
            // (The one OpenSSL call that returns 0 on success.)
            if (SSL_CTX_set_alpn_protos(ctx, self->alpn_wire_.data(),
                                        static_cast<unsigned>(self->alpn_wire_.size())) != 0)
                return conf_error("alpn", "the list was refused");
        } else {
            SSL_CTX_set_alpn_select_cb(ctx, select_alpn, &self->alpn_wire_);
        }
    }

    if (role == TlsRole::server) {
        // Resumed sessions must come from this server's own settings.
        static const unsigned char id[] = "pipeworks";
        SSL_CTX_set_session_id_context(ctx, id, sizeof id - 1);
        if (!conf.session_resumption) {
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_num_tickets(ctx, 0);
        }
    } else if (conf.session_resumption) {
        // The sessions are kept by name and port (keep_session), not in OpenSSL's cache.
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    ERR_clear_error();
    return self;
}

TlsContext::~TlsContext() {
    for (auto& [key, s] : sessions_) SSL_SESSION_free(s);
    SSL_CTX_free(ctx_);
}

SSL_SESSION* TlsContext::session_for(const std::string& key) const {
    auto it = sessions_.find(key);
    if (it == sessions_.end()) return nullptr;
    SSL_SESSION_up_ref(it->second);
    return it->second;
}

void TlsContext::keep_session(const std::string& key, SSL_SESSION* s) {
    auto [it, fresh] = sessions_.try_emplace(key, s);
    if (!fresh) {
        SSL_SESSION_free(it->second);  // a newer ticket replaces the older one
        it->second = s;
        return;
    }
    session_order_.push_back(key);
    if (sessions_.size() > kMaxSessions) {
        auto old = sessions_.find(session_order_.front());
        SSL_SESSION_free(old->second);
        sessions_.erase(old);
        session_order_.pop_front();
    }
}

}  // namespace pipeworks::detail

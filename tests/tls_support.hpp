// Certificates made at test time with the OpenSSL API (nothing in the tree expires): keys,
// a CA, leaf certificates with chosen names and validity, and their PEM text. Free of doctest,
// so the fuzz targets make theirs with it too: a failed step throws, which fails a test case.
// Also the NetConf of a TLS server or client that uses them.
#pragma once

#include <pipeworks/net_conf.hpp>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace pw_test {

struct FreeKey {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct FreeCert {
    void operator()(X509* c) const { X509_free(c); }
};
struct FreeCtx {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, FreeKey>;
using Cert = std::unique_ptr<X509, FreeCert>;
using Ctx = std::unique_ptr<SSL_CTX, FreeCtx>;

inline void need(bool ok, const char* step) {
    if (!ok) throw std::runtime_error(std::string("making test certificates: ") + step);
}

inline Key ec_key() {
    EVP_PKEY_CTX* kc = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
    need(kc != nullptr, "EVP_PKEY_CTX_new_id");
    EVP_PKEY* k = nullptr;
    const bool ok = EVP_PKEY_keygen_init(kc) == 1 &&
                    EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kc, NID_X9_62_prime256v1) == 1 &&
                    EVP_PKEY_keygen(kc, &k) == 1;
    EVP_PKEY_CTX_free(kc);
    need(ok, "EC key generation");
    return Key(k);
}

inline void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    need(ext != nullptr, "X509V3_EXT_conf_nid");
    need(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
    X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by `issuer` (itself when null), valid from
// `from_s` to `to_s` seconds from now, for the names in `san` (leaf certificates).
inline Cert make_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key,
                      long serial, bool ca, const char* san = "IP:127.0.0.1,IP:::1,DNS:localhost",
                      long from_s = -3600, long to_s = 24 * 3600) {
    Cert c(X509_new());
    need(c != nullptr, "X509_new");
    X509* x = c.get();
    need(X509_set_version(x, 2) == 1, "X509_set_version");
    need(ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1, "serial number");
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    need(X509_set_pubkey(x, key) == 1, "X509_set_pubkey");
    X509_NAME* name = X509_get_subject_name(x);
    need(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(cn), -1, -1, 0) == 1,
         "subject name");
    X509* signer = issuer != nullptr ? issuer : x;
    need(X509_set_issuer_name(x, X509_get_subject_name(signer)) == 1, "X509_set_issuer_name");
    if (ca) {
        add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, signer, NID_basic_constraints, "CA:FALSE");
        add_ext(x, signer, NID_subject_alt_name, san);
    }
    add_ext(x, signer, NID_subject_key_identifier, "hash");
    need(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0, "X509_sign");
    return c;
}

inline std::string pem_of(X509* cert) {
    BIO* b = BIO_new(BIO_s_mem());
    need(PEM_write_bio_X509(b, cert) == 1, "PEM_write_bio_X509");
    char* data = nullptr;
    const long n = BIO_get_mem_data(b, &data);
    std::string s(data, static_cast<std::size_t>(n));
    BIO_free(b);
    return s;
}

inline std::string pem_of(EVP_PKEY* key) {
    BIO* b = BIO_new(BIO_s_mem());
    need(PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
         "PEM_write_bio_PrivateKey");
    char* data = nullptr;
    const long n = BIO_get_mem_data(b, &data);
    std::string s(data, static_cast<std::size_t>(n));
    BIO_free(b);
    return s;
}

// A TLS server's NetConf with this certificate chain and key (PEM).
inline pipeworks::NetConf tls_server_conf(const std::string& cert_pem, const std::string& key_pem) {
    pipeworks::NetConf c;
    c.use_ssl = true;
    c.tls.cert_pem = cert_pem;
    c.tls.key_pem = key_pem;
    return c;
}

// A TLS client's NetConf trusting only this CA (PEM).
inline pipeworks::NetConf tls_client_conf(const std::string& ca_pem) {
    pipeworks::NetConf c;
    c.use_ssl = true;
    c.tls.ca_pem = ca_pem;
    return c;
}

}  // namespace pw_test

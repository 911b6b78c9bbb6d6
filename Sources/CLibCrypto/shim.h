#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* The AEAD tag parameter, built in C so that its key is the header's string constant: an
   OSSL_PARAM keeps the key pointer, and a Swift String passed in its place lives only for the
   duration of the constructor call. */
static inline OSSL_PARAM crm_aead_tag_parameter(void *tag, size_t length) {
    return OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, length);
}

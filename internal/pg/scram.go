package pg

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"golang.org/x/text/secure/precis"
)

// scramIterations matches PostgreSQL's default scram_iterations.
const scramIterations = 4096

// ScramVerifier returns a SCRAM-SHA-256 password verifier in PostgreSQL's
// storage format, "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>",
// computed client-side (RFC 5802/7677) the way libpq's
// PQencryptPasswordConn does, with a random 16-byte salt. Passing it to
// ALTER ROLE ... PASSWORD keeps the plaintext off the wire and out of the
// server's logs.
func ScramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating SCRAM salt: %w", err)
	}
	return scramVerifier(password, salt, scramIterations)
}

func scramVerifier(password string, salt []byte, iter int) (string, error) {
	storedKey, serverKey, err := scramKeys(password, salt, iter)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(storedKey), b64(serverKey)), nil
}

// scramKeys derives StoredKey and ServerKey.
func scramKeys(password string, salt []byte, iter int) (storedKey, serverKey []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iter, sha256.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving SCRAM salted password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	sk := sha256.Sum256(clientKey)
	return sk[:], hmacSHA256(salted, "Server Key"), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// saslPrep normalizes a password like libpq's pg_saslprep: pure ASCII is
// used as is; otherwise SASLprep (approximated with PRECIS OpaqueString,
// as pgx does) is applied, and a password SASLprep rejects is used raw,
// as PostgreSQL does.
func saslPrep(password string) string {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return password
	}
	n, err := precis.OpaqueString.String(password)
	if err != nil {
		return password
	}
	return n
}

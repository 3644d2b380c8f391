// The Go peer for `make bench`: GET /v1/patients/{id} with chi and pgx, not part of the product.
//
// It does what Carebase's GET does, the straightforward Go way: verify the EdDSA bearer
// token with crypto/ed25519 on every request (iss, aud, exp, kid), open a read-only pooled
// transaction, set the tenant settings transaction-locally for row-level security, select
// the row, open the five sealed fields with AES-256-GCM (the same keyring and associated
// data) and answer JSON. Like the FastAPI reference it trusts the role in the token and has
// no rate limit, audit context, contract validation or problem documents.
//
// Built by bench/run.py from Debian's golang-go, golang-github-go-chi-chi-dev and
// golang-github-jackc-pgx-v4-dev in GOPATH mode; configured by the environment:
// DATABASE_URL, LISTEN, JWT_PUBLIC_KEYS and DATA_KEYS (JSON objects kid → base64 key),
// JWT_ISSUER, JWT_AUDIENCE. GOMAXPROCS is its worker count.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-chi/chi"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

const selectPatient = `SELECT id, user_id, given_name, family_name, email, status,
       birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
       version, created_at, updated_at
  FROM patients.patients WHERE organization_id = $1 AND id = $2`

const setTenant = `SELECT set_config('app.current_org_id', $1, true),
       set_config('app.current_user_id', $2, true), set_config('app.current_role', $3, true)`

var sealedNames = []string{"birth_date", "national_id", "phone", "address", "notes"}

type claims struct {
	Iss  string `json:"iss"`
	Aud  string `json:"aud"`
	Sub  string `json:"sub"`
	Exp  int64  `json:"exp"`
	Org  string `json:"org"`
	Role string `json:"role"`
}

type patient struct {
	ID         string    `json:"id"`
	GivenName  string    `json:"given_name"`
	FamilyName string    `json:"family_name"`
	Email      *string   `json:"email,omitempty"`
	Status     string    `json:"status"`
	BirthDate  *string   `json:"birth_date,omitempty"`
	NationalID *string   `json:"national_id,omitempty"`
	Phone      *string   `json:"phone,omitempty"`
	Address    *string   `json:"address,omitempty"`
	Notes      *string   `json:"notes,omitempty"`
	UserID     *string   `json:"user_id,omitempty"`
	Version    int32     `json:"version"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

type server struct {
	pool     *pgxpool.Pool
	public   map[string]ed25519.PublicKey
	ciphers  map[string]cipher.AEAD
	issuer   string
	audience string
}

func decodeKeys(name string) map[string][]byte {
	raw := map[string]string{}
	if err := json.Unmarshal([]byte(os.Getenv(name)), &raw); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	keys := map[string][]byte{}
	for kid, value := range raw {
		key, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			log.Fatalf("%s[%s]: %v", name, kid, err)
		}
		keys[kid] = key
	}
	return keys
}

func (s *server) verify(header string) (*claims, error) {
	token := strings.TrimPrefix(header, "Bearer ")
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("malformed")
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, err
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(head, &h); err != nil || h.Alg != "EdDSA" {
		return nil, errors.New("bad header")
	}
	key, ok := s.public[h.Kid]
	if !ok {
		return nil, errors.New("unknown kid")
	}
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(key, []byte(parts[0]+"."+parts[1]), signature) {
		return nil, errors.New("bad signature")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, err
	}
	if c.Iss != s.issuer || c.Aud != s.audience || c.Exp < time.Now().Unix() || c.Sub == "" {
		return nil, errors.New("bad claims")
	}
	return &c, nil
}

func (s *server) open(sealed []byte, aad string) (*string, error) {
	if sealed == nil {
		return nil, nil
	}
	if len(sealed) < 2 || sealed[0] != 1 || len(sealed) < 2+int(sealed[1])+12 {
		return nil, errors.New("bad blob")
	}
	kid := string(sealed[2 : 2+sealed[1]])
	aead, ok := s.ciphers[kid]
	if !ok {
		return nil, errors.New("unknown data key")
	}
	start := 2 + int(sealed[1])
	plain, err := aead.Open(nil, sealed[start:start+12], sealed[start+12:], []byte(aad))
	if err != nil {
		return nil, err
	}
	text := string(plain)
	return &text, nil
}

func (s *server) getPatient(w http.ResponseWriter, r *http.Request) {
	c, err := s.verify(r.Header.Get("Authorization"))
	if err != nil {
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	id := chi.URLParam(r, "id")
	ctx := r.Context()
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, setTenant, c.Org, c.Sub, c.Role); err != nil {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	var p patient
	var sealed [5][]byte
	err = tx.QueryRow(ctx, selectPatient, c.Org, id).Scan(
		&p.ID, &p.UserID, &p.GivenName, &p.FamilyName, &p.Email, &p.Status,
		&sealed[0], &sealed[1], &sealed[2], &sealed[3], &sealed[4],
		&p.Version, &p.CreatedAt, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if err := tx.Commit(ctx); err != nil {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	targets := []**string{&p.BirthDate, &p.NationalID, &p.Phone, &p.Address, &p.Notes}
	for i, name := range sealedNames {
		opened, err := s.open(sealed[i], "patients.patients|"+c.Org+"|"+p.ID+"|"+name)
		if err != nil {
			http.Error(w, "integrity", http.StatusInternalServerError)
			return
		}
		*targets[i] = opened
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&p) //nolint:errcheck // the client may have gone
}

func main() {
	config, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	config.MaxConns = 16
	config.MinConns = 4
	pool, err := pgxpool.ConnectConfig(context.Background(), config)
	if err != nil {
		log.Fatal(err)
	}
	s := &server{
		pool:     pool,
		public:   map[string]ed25519.PublicKey{},
		ciphers:  map[string]cipher.AEAD{},
		issuer:   os.Getenv("JWT_ISSUER"),
		audience: os.Getenv("JWT_AUDIENCE"),
	}
	for kid, key := range decodeKeys("JWT_PUBLIC_KEYS") {
		s.public[kid] = ed25519.PublicKey(key)
	}
	for kid, key := range decodeKeys("DATA_KEYS") {
		block, err := aes.NewCipher(key)
		if err != nil {
			log.Fatal(err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			log.Fatal(err)
		}
		s.ciphers[kid] = aead
	}
	router := chi.NewRouter()
	router.Get("/v1/patients/{id}", s.getPatient)
	router.Get("/health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`)) //nolint:errcheck // the client may have gone
	})
	log.Fatal(http.ListenAndServe(os.Getenv("LISTEN"), router))
}

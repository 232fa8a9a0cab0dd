// Package briskpeer is the shared core of the Go peers (gin and net/http):
// configuration, the PostgreSQL pool and queries, the users and orders logic
// of brisk's contract (/work/shared/spec/API.md), written the way a Go team
// would write it: encoding/json, pgxpool (statements prepared and cached per
// connection by pgx), crypto/hmac, one goroutine per core for batch pricing.
package briskpeer

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// Config comes from the same environment variables brisk reads.
type Config struct {
	Addr        string
	DatabaseURL string
	ReceiptKey  []byte
}

func LoadConfig(defaultAddr string) Config {
	c := Config{Addr: os.Getenv("BRISK_ADDR"), DatabaseURL: os.Getenv("BRISK_DATABASE_URL")}
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	key := os.Getenv("BRISK_RECEIPT_KEY")
	if key == "" {
		key = "dev-receipt-key"
	}
	c.ReceiptKey = []byte(key)
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		fmt.Fprintln(os.Stderr, "BRISK_DATABASE_URL must be a postgres:// URL")
		os.Exit(2)
	}
	return c
}

// Service holds the pool and the receipt key.
type Service struct {
	pool *pgxpool.Pool
	key  []byte
	macs sync.Pool // keyed HMAC-SHA256 states, reused with Reset
}

func NewService(ctx context.Context, c Config) (*Service, error) {
	pc, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, err
	}
	// A few connections per core: enough to keep PostgreSQL busy while
	// requests wait on the network.
	pc.MaxConns = int32(4 * runtime.GOMAXPROCS(0))
	if pc.MaxConns < 8 {
		pc.MaxConns = 8
	}
	pool, err := pgxpool.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	s := &Service{pool: pool, key: c.ReceiptKey}
	s.macs.New = func() any { return hmac.New(sha256.New, s.key) }
	return s, nil
}

func (s *Service) Close() { s.pool.Close() }

// ---- errors ----

// APIError is an error with its HTTP status; Message goes into {"error": ...}.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

func bad(msg string) error { return &APIError{400, msg} }

// ErrorBody is the contract's error shape.
type ErrorBody struct {
	Error string `json:"error"`
}

// StatusOf maps an error to a status and a body.
func StatusOf(err error) (int, ErrorBody) {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status, ErrorBody{ae.Message}
	}
	return 500, ErrorBody{"internal error"}
}

// ---- users ----

type User struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"created_at"`
}

// CreateUserRequest uses pointers: absent and null are "missing".
type CreateUserRequest struct {
	Name  *string `json:"name"`
	Email *string `json:"email"`
}

func validateName(n string) error {
	if !utf8.ValidString(n) {
		return bad("name must be valid utf-8")
	}
	count := 0
	for _, r := range n {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return bad("name must not contain control characters")
		}
		count++
	}
	if count < 1 || count > 200 {
		return bad("name must be 1 to 200 characters")
	}
	return nil
}

func validateEmail(e string) error {
	if len(e) < 3 || len(e) > 254 {
		return bad("email must be 3 to 254 bytes")
	}
	if !utf8.ValidString(e) {
		return bad("email must be valid utf-8")
	}
	for i := 0; i < len(e); i++ {
		if e[i] <= 0x20 || e[i] == 0x7f {
			return bad("email must not contain spaces or control characters")
		}
	}
	at := strings.IndexByte(e, '@')
	if at <= 0 || at == len(e)-1 || strings.Count(e, "@") != 1 {
		return bad("email must contain one @ with text on both sides")
	}
	return nil
}

func (r *CreateUserRequest) Validate() error {
	if r.Name == nil {
		return bad("name is required")
	}
	if r.Email == nil {
		return bad("email is required")
	}
	if err := validateName(*r.Name); err != nil {
		return err
	}
	return validateEmail(*r.Email)
}

const rfc3339Seconds = "2006-01-02T15:04:05Z"

func scanUser(row pgx.Row) (User, error) {
	var u User
	var t time.Time
	if err := row.Scan(&u.ID, &u.Name, &u.Email, &t); err != nil {
		return u, err
	}
	u.CreatedAt = t.UTC().Format(rfc3339Seconds)
	return u, nil
}

func (s *Service) CreateUser(ctx context.Context, r *CreateUserRequest) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		"INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email, created_at",
		*r.Name, *r.Email))
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return u, &APIError{409, "email already exists"}
		}
		return u, err
	}
	return u, nil
}

// ParseID parses a path id: a positive 64-bit integer, digits only.
func ParseID(s string) (int64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, bad("invalid id")
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, bad("invalid id")
	}
	return id, nil
}

func (s *Service) GetUser(ctx context.Context, id int64) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		"SELECT id, name, email, created_at FROM users WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, &APIError{404, "user not found"}
	}
	return u, err
}

// ---- orders ----

type OrderLine struct {
	SKU            *string `json:"sku"`
	Quantity       *int64  `json:"quantity"`
	UnitPriceCents *int64  `json:"unit_price_cents"`
}

type BatchOrder struct {
	ID     *string     `json:"id"`
	UserID *int64      `json:"user_id"`
	Items  []OrderLine `json:"items"`
}

type ProcessRequest struct {
	Orders []BatchOrder `json:"orders"`
}

type Result struct {
	ID            string `json:"id"`
	SubtotalCents int64  `json:"subtotal_cents"`
	DiscountCents int64  `json:"discount_cents"`
	TaxCents      int64  `json:"tax_cents"`
	TotalCents    int64  `json:"total_cents"`
	Receipt       string `json:"receipt"`
}

type ProcessResponse struct {
	Results []Result `json:"results"`
}

func visibleASCII(s string, max int) bool {
	if len(s) < 1 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (r *ProcessRequest) Validate() error {
	if r.Orders == nil {
		return bad("orders is required")
	}
	if len(r.Orders) < 1 || len(r.Orders) > 100000 {
		return bad("orders must have 1 to 100000 entries")
	}
	for i := range r.Orders {
		o := &r.Orders[i]
		if o.ID == nil || !visibleASCII(*o.ID, 64) {
			return bad(fmt.Sprintf("orders[%d].id must be 1 to 64 printable ascii characters", i))
		}
		if o.UserID == nil || *o.UserID <= 0 {
			return bad(fmt.Sprintf("orders[%d].user_id must be a positive integer", i))
		}
		if len(o.Items) < 1 || len(o.Items) > 100 {
			return bad(fmt.Sprintf("orders[%d].items must have 1 to 100 lines", i))
		}
		for j := range o.Items {
			l := &o.Items[j]
			switch {
			case l.SKU == nil || !visibleASCII(*l.SKU, 64):
				return bad(fmt.Sprintf("orders[%d].items[%d].sku must be 1 to 64 printable ascii characters (no spaces)", i, j))
			case l.Quantity == nil || *l.Quantity < 1 || *l.Quantity > 10000:
				return bad(fmt.Sprintf("orders[%d].items[%d].quantity must be an integer from 1 to 10000", i, j))
			case l.UnitPriceCents == nil || *l.UnitPriceCents < 0 || *l.UnitPriceCents > 100000000:
				return bad(fmt.Sprintf("orders[%d].items[%d].unit_price_cents must be an integer from 0 to 100000000", i, j))
			}
		}
	}
	return nil
}

// price computes the totals and the receipt of one validated order.
func (s *Service) price(o *BatchOrder, mac hash.Hash, msg []byte) (Result, []byte) {
	var sub int64
	for _, l := range o.Items {
		sub += *l.Quantity * *l.UnitPriceCents
	}
	var disc int64
	if sub >= 10000 {
		disc = sub * 5 / 100
	}
	tax := ((sub-disc)*21 + 50) / 100
	total := sub - disc + tax

	msg = append(msg[:0], *o.ID...)
	msg = append(msg, '|')
	msg = strconv.AppendInt(msg, *o.UserID, 10)
	msg = append(msg, '|')
	for i, l := range o.Items {
		if i > 0 {
			msg = append(msg, ',')
		}
		msg = append(msg, *l.SKU...)
		msg = append(msg, ':')
		msg = strconv.AppendInt(msg, *l.Quantity, 10)
		msg = append(msg, ':')
		msg = strconv.AppendInt(msg, *l.UnitPriceCents, 10)
	}
	msg = append(msg, '|')
	msg = strconv.AppendInt(msg, total, 10)
	mac.Reset()
	mac.Write(msg)
	var sum [sha256.Size]byte
	return Result{ID: *o.ID, SubtotalCents: sub, DiscountCents: disc, TaxCents: tax,
		TotalCents: total, Receipt: hex.EncodeToString(mac.Sum(sum[:0]))}, msg
}

// Process prices and signs a validated batch on every core, results in request order.
func (s *Service) Process(r *ProcessRequest) ProcessResponse {
	n := len(r.Orders)
	results := make([]Result, n)
	workers := runtime.GOMAXPROCS(0)
	if workers > n {
		workers = n
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for start := 0; start < n; start += chunk {
		end := start + chunk
		if end > n {
			end = n
		}
		wg.Add(1)
		go func(start, end int) {
			defer wg.Done()
			mac := s.macs.Get().(hash.Hash)
			msg := make([]byte, 0, 256)
			for i := start; i < end; i++ {
				results[i], msg = s.price(&r.Orders[i], mac, msg)
			}
			s.macs.Put(mac)
		}(start, end)
	}
	wg.Wait()
	return ProcessResponse{Results: results}
}

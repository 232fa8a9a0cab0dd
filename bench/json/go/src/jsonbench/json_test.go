// Go's encoding/json on the two operations of bench/json: encode the
// contract's user object, decode a POST /users body. Run with
//   GO111MODULE=off GOPATH=$PWD/bench/json/go go test -run XXX -bench . -benchtime 2000000x -count 7 jsonbench
package jsonbench

import (
	"bytes"
	"encoding/json"
	"testing"
)

type User struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"created_at"`
}

type CreateUserRequest struct {
	Name  *string `json:"name"`
	Email *string `json:"email"`
}

var (
	user = User{42, "Ada Lovelace", "ada@example.com", "2026-11-27T06:05:53Z"}
	body = []byte(`{"name":"Ada Lovelace","email":"ada@example.com"}`)
	sink []byte
	req  CreateUserRequest
)

// json.Marshal: what a handler (gin's c.JSON, or writeJSON) does per response.
func BenchmarkEncodeUser(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		out, err := json.Marshal(&user)
		if err != nil {
			b.Fatal(err)
		}
		sink = out
	}
	want := `{"id":42,"name":"Ada Lovelace","email":"ada@example.com","created_at":"2026-11-27T06:05:53Z"}`
	if string(sink) != want {
		b.Fatalf("got %s", sink)
	}
}

// json.Encoder into a reused buffer: the cheapest encoding/json can do.
func BenchmarkEncodeUserReusedBuffer(b *testing.B) {
	b.ReportAllocs()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := 0; i < b.N; i++ {
		buf.Reset()
		if err := enc.Encode(&user); err != nil {
			b.Fatal(err)
		}
	}
	sink = buf.Bytes()
}

func BenchmarkDecodeCreateUser(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req = CreateUserRequest{}
		if err := json.Unmarshal(body, &req); err != nil {
			b.Fatal(err)
		}
	}
	if req.Name == nil || *req.Name != "Ada Lovelace" {
		b.Fatal("bad decode")
	}
}

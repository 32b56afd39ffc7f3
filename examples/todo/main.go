// Command todo is a web backend on Nimbus: a per-user todo API. Users sign up
// and log in through Nimbus's end-user auth; the function is deployed with
// auth: user, so every request arrives with the verified user in
// X-Nimbus-User-Id. Todos are JSON documents in the KV bucket "todos" under
// "USERID/TODOID"; attachments are objects in the bucket "attachments" under
// the same key.
//
//	GET    /todos                  the user's todos
//	POST   /todos                  create {"title": "…"} → 201 with the todo
//	GET    /todos/{id}             one todo
//	PUT    /todos/{id}             update {"title"?, "done"?}
//	DELETE /todos/{id}             delete (and its attachment)
//	PUT    /todos/{id}/attachment  store the body as the attachment
//	GET    /todos/{id}/attachment  read it back
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

const maxAttachment = 8 << 20

// Todo is one stored todo.
type Todo struct {
	ID         string      `json:"id"`
	Title      string      `json:"title"`
	Done       bool        `json:"done"`
	Created    time.Time   `json:"created"`
	Updated    time.Time   `json:"updated"`
	Attachment *Attachment `json:"attachment,omitempty"`
}

// Attachment describes a todo's file.
type Attachment struct {
	ContentType string `json:"content_type"`
	Size        int    `json:"size"`
}

var (
	todos       = nimbus.KV("todos")
	attachments = nimbus.Objects("attachments")
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /todos", list)
	mux.HandleFunc("POST /todos", create)
	mux.HandleFunc("GET /todos/{id}", get)
	mux.HandleFunc("PUT /todos/{id}", update)
	mux.HandleFunc("DELETE /todos/{id}", remove)
	mux.HandleFunc("PUT /todos/{id}/attachment", putAttachment)
	mux.HandleFunc("GET /todos/{id}/attachment", getAttachment)
	nimbus.Handle(requireUser(mux))
}

// requireUser refuses requests without a verified user (Nimbus already does
// for auth: user; this keeps the function safe if deployed otherwise).
func requireUser(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Nimbus-User-Id") == "" {
			writeError(w, http.StatusUnauthorized, "log in first: send Authorization: Bearer ACCESS_TOKEN")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func userID(r *http.Request) string { return r.Header.Get("X-Nimbus-User-Id") }

func key(r *http.Request, id string) string { return userID(r) + "/" + id }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"message": msg}})
}

func hostError(w http.ResponseWriter, err error) {
	if errors.Is(err, nimbus.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such todo")
		return
	}
	if errors.Is(err, nimbus.ErrUnavailable) {
		writeError(w, http.StatusServiceUnavailable, "this server offers no storage to functions")
		return
	}
	nimbus.Log("error", "host call failed", "error", err)
	writeError(w, http.StatusInternalServerError, "storage failed; try again")
}

// validID accepts the ids this function makes (hex), so that a path cannot
// reach another user's keys.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func load(r *http.Request, id string) (*Todo, error) {
	b, err := todos.Get(r.Context(), key(r, id))
	if err != nil {
		return nil, err
	}
	var t Todo
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

func store(r *http.Request, t *Todo) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return todos.Put(r.Context(), key(r, t.ID), b)
}

func list(w http.ResponseWriter, r *http.Request) {
	keys, err := todos.List(r.Context(), userID(r)+"/")
	if err != nil && !errors.Is(err, nimbus.ErrNotFound) { // no bucket yet: no todos
		hostError(w, err)
		return
	}
	out := []*Todo{}
	for _, k := range keys {
		t, err := load(r, strings.TrimPrefix(k, userID(r)+"/"))
		if errors.Is(err, nimbus.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			hostError(w, err)
			return
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	writeJSON(w, http.StatusOK, out)
}

type input struct {
	Title *string `json:"title"`
	Done  *bool   `json:"done"`
}

func readInput(w http.ResponseWriter, r *http.Request) (*input, bool) {
	var in input
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "body must be JSON like {\"title\": \"buy milk\", \"done\": false}")
		return nil, false
	}
	if in.Title != nil && (strings.TrimSpace(*in.Title) == "" || len(*in.Title) > 500) {
		writeError(w, http.StatusBadRequest, "title must be 1-500 characters")
		return nil, false
	}
	return &in, true
}

func create(w http.ResponseWriter, r *http.Request) {
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	if in.Title == nil {
		writeError(w, http.StatusBadRequest, "title is required")
		return
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	now := time.Now().UTC()
	t := &Todo{ID: hex.EncodeToString(id[:]), Title: *in.Title, Created: now, Updated: now}
	if in.Done != nil {
		t.Done = *in.Done
	}
	if err := store(r, t); err != nil {
		hostError(w, err)
		return
	}
	nimbus.Log("info", "todo created", "user", userID(r), "id", t.ID)
	writeJSON(w, http.StatusCreated, t)
}

func withTodo(w http.ResponseWriter, r *http.Request) (*Todo, bool) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusNotFound, "no such todo")
		return nil, false
	}
	t, err := load(r, id)
	if err != nil {
		hostError(w, err)
		return nil, false
	}
	return t, true
}

func get(w http.ResponseWriter, r *http.Request) {
	if t, ok := withTodo(w, r); ok {
		writeJSON(w, http.StatusOK, t)
	}
}

func update(w http.ResponseWriter, r *http.Request) {
	t, ok := withTodo(w, r)
	if !ok {
		return
	}
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	if in.Title != nil {
		t.Title = *in.Title
	}
	if in.Done != nil {
		t.Done = *in.Done
	}
	t.Updated = time.Now().UTC()
	if err := store(r, t); err != nil {
		hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func remove(w http.ResponseWriter, r *http.Request) {
	t, ok := withTodo(w, r)
	if !ok {
		return
	}
	if t.Attachment != nil {
		if err := attachments.Delete(r.Context(), key(r, t.ID)); err != nil && !errors.Is(err, nimbus.ErrNotFound) {
			hostError(w, err)
			return
		}
	}
	if err := todos.Delete(r.Context(), key(r, t.ID)); err != nil {
		hostError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func putAttachment(w http.ResponseWriter, r *http.Request) {
	t, ok := withTodo(w, r)
	if !ok {
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxAttachment+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the attachment failed")
		return
	}
	if len(data) > maxAttachment {
		writeError(w, http.StatusRequestEntityTooLarge, "attachments are limited to 8 MiB")
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = http.DetectContentType(data)
	}
	if err := attachments.Put(r.Context(), key(r, t.ID), data, ct); err != nil {
		hostError(w, err)
		return
	}
	t.Attachment = &Attachment{ContentType: ct, Size: len(data)}
	t.Updated = time.Now().UTC()
	if err := store(r, t); err != nil {
		hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func getAttachment(w http.ResponseWriter, r *http.Request) {
	t, ok := withTodo(w, r)
	if !ok {
		return
	}
	if t.Attachment == nil {
		writeError(w, http.StatusNotFound, "this todo has no attachment")
		return
	}
	data, err := attachments.Get(r.Context(), key(r, t.ID))
	if err != nil {
		hostError(w, err)
		return
	}
	w.Header().Set("Content-Type", t.Attachment.ContentType)
	_, _ = w.Write(data)
}

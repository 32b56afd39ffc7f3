package s3_test

import (
	"encoding/json"
	"net/http"
	"sync"

	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nimbusfn/nimbus/internal/baas/objects"

	nimbuss3 "github.com/nimbusfn/nimbus/internal/compat/s3"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

type miniocredsT = miniocreds.Credentials

func miniocredsNew(c nimbuss3.Credentials) *miniocreds.Credentials {
	return miniocreds.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, "")
}

// recordPayload notes the x-amz-content-sha256 mode of every PUT.
func recordPayload(h http.Handler, seen *[]string) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			mu.Lock()
			*seen = append(*seen, r.Header.Get("X-Amz-Content-Sha256"))
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func objectsListAll() objects.ListOptions { return objects.ListOptions{} }

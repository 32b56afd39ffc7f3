package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/bus"
	nimbuss3 "github.com/nimbusfn/nimbus/internal/compat/s3"
)

type env struct {
	bus   *bus.Bus
	obj   *objects.Service
	creds *nimbuss3.KVCredentials
	s3    *nimbuss3.Server
	srv   *httptest.Server // the S3 listener
	api   *httptest.Server // REST (credentials, presign)
	alpha nimbuss3.Credentials
	beta  nimbuss3.Credentials
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	obj := objects.New(objects.Config{Bus: b})
	if err := obj.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cr, err := nimbuss3.NewKVCredentials(ctx, b, testKEK)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{bus: b, obj: obj, creds: cr}
	e.srv = httptest.NewUnstartedServer(nil)
	e.s3 = nimbuss3.New(nimbuss3.Config{Objects: obj, Credentials: cr, S3URL: "http://" + e.srv.Listener.Addr().String()})
	e.srv.Config.Handler = e.s3
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	mux := http.NewServeMux()
	e.s3.Routes(mux, func(r *http.Request) string { return r.Header.Get("X-Tenant") })
	e.api = httptest.NewServer(mux)
	t.Cleanup(e.api.Close)
	if e.alpha, err = cr.ForTenant(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if e.beta, err = cr.ForTenant(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) minio(t testing.TB, c nimbuss3.Credentials) *minio.Client {
	t.Helper()
	mc, err := minio.New(strings.TrimPrefix(e.srv.URL, "http://"), &minio.Options{
		Creds: miniocreds.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, ""), Secure: false,
		Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

func (e *env) aws(c nimbuss3.Credentials) *awss3.Client {
	return awss3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(e.srv.URL)
		o.UsePathStyle = true
	})
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func minioCode(err error) string { return minio.ToErrorResponse(err).Code }

func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestMinio(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	mc := e.minio(t, e.alpha)

	if err := mc.MakeBucket(ctx, "photos", minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(ctx, "photos", minio.MakeBucketOptions{}); minioCode(err) != "BucketAlreadyOwnedByYou" {
		t.Fatalf("second MakeBucket: %v", err)
	}
	if err := mc.MakeBucket(ctx, "Bad_Bucket", minio.MakeBucketOptions{}); err == nil {
		t.Fatal("bad bucket name accepted")
	}
	if ok, err := mc.BucketExists(ctx, "photos"); !ok || err != nil {
		t.Fatalf("BucketExists: %v %v", ok, err)
	}
	if ok, err := mc.BucketExists(ctx, "nothing"); ok || err != nil {
		t.Fatalf("BucketExists(nothing): %v %v", ok, err)
	}
	bs, err := mc.ListBuckets(ctx)
	if err != nil || len(bs) != 1 || bs[0].Name != "photos" {
		t.Fatalf("ListBuckets %+v %v", bs, err)
	}

	// Put/stat/get with metadata; minio-go streams aws-chunked signed bodies over HTTP.
	content := randBytes(300_000)
	ui, err := mc.PutObject(ctx, "photos", "dir/cat.jpg", bytes.NewReader(content), int64(len(content)), minio.PutObjectOptions{
		ContentType: "image/jpeg", UserMetadata: map[string]string{"owner": "ada"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ui.ETag != md5hex(content) {
		t.Fatalf("ETag %s, want %s", ui.ETag, md5hex(content))
	}
	st, err := mc.StatObject(ctx, "photos", "dir/cat.jpg", minio.StatObjectOptions{})
	if err != nil || st.Size != int64(len(content)) || st.ContentType != "image/jpeg" || st.UserMetadata["Owner"] != "ada" || st.ETag != md5hex(content) {
		t.Fatalf("stat %+v %v", st, err)
	}
	o, err := mc.GetObject(ctx, "photos", "dir/cat.jpg", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("GetObject: %d bytes, %v (no chunk framing may be stored)", len(got), err)
	}
	gopts := minio.GetObjectOptions{}
	_ = gopts.SetRange(1000, 1999)
	o, _ = mc.GetObject(ctx, "photos", "dir/cat.jpg", gopts)
	got, err = io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, content[1000:2000]) {
		t.Fatalf("ranged get: %d bytes, %v", len(got), err)
	}
	gopts = minio.GetObjectOptions{}
	_ = gopts.SetRange(400_000, 0)
	o, _ = mc.GetObject(ctx, "photos", "dir/cat.jpg", gopts)
	if _, err := io.ReadAll(o); minioCode(err) != "InvalidRange" {
		t.Fatalf("unsatisfiable range: %v", err)
	}
	o.Close()

	// Many keys: listing with prefix, delimiter and continuation.
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k := fmt.Sprintf("logs/%02d.txt", i)
			if i%3 == 0 {
				k = fmt.Sprintf("logs/sub%d/x.txt", i)
			}
			_, err := mc.PutObject(ctx, "photos", k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	for oi := range mc.ListObjects(ctx, "photos", minio.ListObjectsOptions{Prefix: "logs/", MaxKeys: 4}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	if len(keys) != 30 || !sort.StringsAreSorted(keys) || keys[0] != "logs/01.txt" || !strings.HasSuffix(keys[len(keys)-1], "/") {
		t.Fatalf("non-recursive listing: %d %v", len(keys), keys)
	}
	keys = nil
	for oi := range mc.ListObjects(ctx, "photos", minio.ListObjectsOptions{Prefix: "logs/", Recursive: true, MaxKeys: 7}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	if len(keys) != 30 {
		t.Fatalf("recursive listing: %d %v", len(keys), keys)
	}

	keys = nil
	for oi := range mc.ListObjects(ctx, "photos", minio.ListObjectsOptions{Prefix: "logs/", UseV1: true, MaxKeys: 6}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	if len(keys) != 30 {
		t.Fatalf("ListObjects v1: %d %v", len(keys), keys)
	}

	// Copy keeps metadata; remove objects.
	if _, err := mc.CopyObject(ctx, minio.CopyDestOptions{Bucket: "photos", Object: "copy.jpg"}, minio.CopySrcOptions{Bucket: "photos", Object: "dir/cat.jpg"}); err != nil {
		t.Fatal(err)
	}
	st, err = mc.StatObject(ctx, "photos", "copy.jpg", minio.StatObjectOptions{})
	if err != nil || st.ETag != md5hex(content) || st.ContentType != "image/jpeg" || st.UserMetadata["Owner"] != "ada" {
		t.Fatalf("copy stat %+v %v", st, err)
	}
	if err := mc.RemoveBucket(ctx, "photos"); minioCode(err) != "BucketNotEmpty" {
		t.Fatalf("RemoveBucket non-empty: %v", err)
	}
	objCh := make(chan minio.ObjectInfo)
	go func() {
		defer close(objCh)
		for oi := range mc.ListObjects(ctx, "photos", minio.ListObjectsOptions{Recursive: true}) {
			objCh <- oi
		}
	}()
	for re := range mc.RemoveObjects(ctx, "photos", objCh, minio.RemoveObjectsOptions{}) {
		t.Fatalf("RemoveObjects: %v", re.Err)
	}
	if err := mc.RemoveBucket(ctx, "photos"); err != nil {
		t.Fatal(err)
	}
}

func TestMinioMultipartAndPresign(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	mc := e.minio(t, e.alpha)
	if err := mc.MakeBucket(ctx, "big", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	content := randBytes(20 << 20)
	ui, err := mc.PutObject(ctx, "big", "20mb.bin", bytes.NewReader(content), int64(len(content)), minio.PutObjectOptions{PartSize: 5 << 20, ContentType: "application/x-big"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(ui.ETag, "-4") {
		t.Fatalf("multipart ETag %q", ui.ETag)
	}
	o, err := mc.GetObject(ctx, "big", "20mb.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || len(got) != len(content) || md5hex(got) != md5hex(content) {
		t.Fatalf("20 MB round trip: %d bytes, %v", len(got), err)
	}

	// Presigned PUT and GET with plain net/http.
	pu, err := mc.PresignedPutObject(ctx, "big", "up/by url.txt", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", pu.String(), strings.NewReader("uploaded by URL"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("presigned PUT: %d", resp.StatusCode)
	}
	gu, err := mc.PresignedGetObject(ctx, "big", "up/by url.txt", time.Hour, url.Values{"response-content-type": {"text/plain"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(gu.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "uploaded by URL" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("presigned GET: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	// Tampered: another key under the same signature.
	tampered := strings.Replace(gu.String(), "by%20url.txt", "by%20url.tx2", 1)
	resp, err = http.Get(tampered)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "<Code>SignatureDoesNotMatch</Code>") {
		t.Fatalf("tampered URL: %d %s", resp.StatusCode, body)
	}
}

func TestAWSSDK(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c := e.aws(e.alpha)
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("docs")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("docs")}); err != nil {
		t.Fatal(err)
	}
	loc, err := c.GetBucketLocation(ctx, &awss3.GetBucketLocationInput{Bucket: aws.String("docs")})
	if err != nil || loc.LocationConstraint != "" {
		t.Fatalf("location %+v %v", loc, err)
	}
	body := []byte("hello, nimbus object storage")
	po, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("docs"), Key: aws.String("a/readme.txt"), Body: bytes.NewReader(body),
		ContentType: aws.String("text/plain"), Metadata: map[string]string{"lang": "en"}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(po.ETag) != `"`+md5hex(body)+`"` {
		t.Fatalf("ETag %s", aws.ToString(po.ETag))
	}
	go_, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("docs"), Key: aws.String("a/readme.txt"), Range: aws.String("bytes=7-12")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(go_.Body)
	go_.Body.Close()
	if string(got) != "nimbus" || aws.ToString(go_.ContentRange) != fmt.Sprintf("bytes 7-12/%d", len(body)) {
		t.Fatalf("range %q %q", got, aws.ToString(go_.ContentRange))
	}
	ho, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("docs"), Key: aws.String("a/readme.txt")})
	if err != nil || aws.ToString(ho.ContentType) != "text/plain" || ho.Metadata["lang"] != "en" || aws.ToInt64(ho.ContentLength) != int64(len(body)) {
		t.Fatalf("head %+v %v", ho, err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("docs"), Key: aws.String("nope")}); err == nil {
		t.Fatal("HEAD of a missing key succeeded")
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("docs"), Key: aws.String("nope")}); awsCode(err) != "NoSuchKey" {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("docs"), Key: aws.String("a/readme.txt"), Range: aws.String("bytes=999-")}); awsCode(err) != "InvalidRange" {
		t.Fatalf("bad range: %v", err)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("docs"), Key: aws.String(strings.Repeat("k", 1025)), Body: strings.NewReader("x")}); awsCode(err) != "KeyTooLongError" {
		t.Fatalf("long key: %v", err)
	}

	// ListObjectsV2: prefix, delimiter, continuation with small pages.
	for i := 0; i < 9; i++ {
		if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("docs"), Key: aws.String(fmt.Sprintf("a/%d/f", i%3) + fmt.Sprint(i)), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	var items []string
	var token *string
	pages := 0
	for {
		lo, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("docs"), Prefix: aws.String("a/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(2), ContinuationToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, cp := range lo.CommonPrefixes {
			items = append(items, aws.ToString(cp.Prefix))
		}
		for _, o := range lo.Contents {
			items = append(items, aws.ToString(o.Key))
		}
		if !aws.ToBool(lo.IsTruncated) {
			break
		}
		token = lo.NextContinuationToken
	}
	if pages != 2 || strings.Join(items, ",") != "a/0/,a/1/,a/2/,a/readme.txt" {
		t.Fatalf("%d pages: %v", pages, items)
	}
	p := awss3.NewListObjectsV2Paginator(c, &awss3.ListObjectsV2Input{Bucket: aws.String("docs"), MaxKeys: aws.Int32(3), StartAfter: aws.String("a/0/f3")})
	n := 0
	for p.HasMorePages() {
		lo, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(lo.Contents)
	}
	if n != 8 { // a/0/f6, a/1/*, a/2/*, a/readme.txt
		t.Fatalf("paginator after start-after saw %d", n)
	}

	// Copy with replaced metadata.
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("docs"), Key: aws.String("b.txt"), CopySource: aws.String("docs/a/readme.txt"),
		MetadataDirective: types.MetadataDirectiveReplace, ContentType: aws.String("text/markdown"), Metadata: map[string]string{"lang": "fr"}}); err != nil {
		t.Fatal(err)
	}
	ho, err = c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("docs"), Key: aws.String("b.txt")})
	if err != nil || aws.ToString(ho.ContentType) != "text/markdown" || ho.Metadata["lang"] != "fr" || aws.ToString(ho.ETag) != `"`+md5hex(body)+`"` {
		t.Fatalf("copied head %+v %v", ho, err)
	}

	// DeleteObjects.
	do, err := c.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: aws.String("docs"), Delete: &types.Delete{Objects: []types.ObjectIdentifier{{Key: aws.String("b.txt")}, {Key: aws.String("never")}}}})
	if err != nil || len(do.Deleted) != 2 || len(do.Errors) != 0 {
		t.Fatalf("DeleteObjects %+v %v", do, err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("docs"), Key: aws.String("b.txt")}); err == nil {
		t.Fatal("deleted object still there")
	}
}

func TestAWSSDKMultipart(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c := e.aws(e.alpha)
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("mpu")}); err != nil {
		t.Fatal(err)
	}
	cu, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("obj"), ContentType: aws.String("application/x-parts")})
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{randBytes(5 << 20), randBytes(5 << 20), randBytes(1000)}
	done := make([]types.CompletedPart, len(parts))
	for _, i := range []int{1, 0, 2} {
		up, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("obj"), UploadId: cu.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(parts[i])})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(up.ETag) != `"`+md5hex(parts[i])+`"` {
			t.Fatalf("part ETag %s", aws.ToString(up.ETag))
		}
		done[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: up.ETag}
	}
	lp, err := c.ListParts(ctx, &awss3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("obj"), UploadId: cu.UploadId})
	if err != nil || len(lp.Parts) != 3 || aws.ToInt64(lp.Parts[2].Size) != 1000 {
		t.Fatalf("ListParts %+v %v", lp, err)
	}
	complete := func(ps ...types.CompletedPart) error {
		_, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("obj"), UploadId: cu.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: ps}})
		return err
	}
	if err := complete(done[1], done[0], done[2]); awsCode(err) != "InvalidPartOrder" {
		t.Fatalf("misordered: %v", err)
	}
	if err := complete(done[0], done[1], types.CompletedPart{PartNumber: aws.Int32(4), ETag: done[2].ETag}); awsCode(err) != "InvalidPart" {
		t.Fatalf("missing part: %v", err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("obj")}); err == nil {
		t.Fatal("a failed complete created the object")
	}
	if err := complete(done...); err != nil {
		t.Fatal(err)
	}
	var sums []byte
	for _, p := range parts {
		s := md5.Sum(p)
		sums = append(sums, s[:]...)
	}
	g, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("obj")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(g.Body)
	g.Body.Close()
	if !bytes.Equal(got, bytes.Join(parts, nil)) || aws.ToString(g.ETag) != `"`+md5hex(sums)+`-3"` || aws.ToString(g.ContentType) != "application/x-parts" {
		t.Fatalf("assembled: %d bytes, ETag %s, type %s", len(got), aws.ToString(g.ETag), aws.ToString(g.ContentType))
	}
	// Abort.
	cu2, _ := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("gone")})
	if _, err := c.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("gone"), UploadId: cu2.UploadId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("gone"), UploadId: cu2.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("x")}); awsCode(err) != "NoSuchUpload" {
		t.Fatalf("part after abort: %v", err)
	}
}

func TestAuthAndIsolation(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c := e.aws(e.alpha)
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("private")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("private"), Key: aws.String("secret.txt"), Body: strings.NewReader("alpha only")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("bad..name")}); awsCode(err) != "InvalidBucketName" {
		t.Fatalf("bad bucket name: %v", err)
	}
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("private")}); awsCode(err) != "BucketNotEmpty" {
		t.Fatalf("delete non-empty: %v", err)
	}
	// Wrong secret, unknown key.
	bad := e.aws(nimbuss3.Credentials{AccessKeyID: e.alpha.AccessKeyID, SecretAccessKey: "wrong"})
	if _, err := bad.ListBuckets(ctx, &awss3.ListBucketsInput{}); awsCode(err) != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	unknown := e.aws(nimbuss3.Credentials{AccessKeyID: "NIMBNOSUCHKEY", SecretAccessKey: e.alpha.SecretAccessKey})
	if _, err := unknown.ListBuckets(ctx, &awss3.ListBucketsInput{}); awsCode(err) != "InvalidAccessKeyId" {
		t.Fatalf("unknown key: %v", err)
	}
	if err := e.minio(t, nimbuss3.Credentials{AccessKeyID: e.alpha.AccessKeyID, SecretAccessKey: "wrong"}).MakeBucket(ctx, "x-wrong", minio.MakeBucketOptions{}); minioCode(err) != "SignatureDoesNotMatch" {
		t.Fatalf("minio wrong secret: %v", err)
	}

	// The second tenant sees nothing of the first.
	b := e.aws(e.beta)
	lb, err := b.ListBuckets(ctx, &awss3.ListBucketsInput{})
	if err != nil || len(lb.Buckets) != 0 {
		t.Fatalf("beta lists %+v %v", lb, err)
	}
	if _, err := b.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("private"), Key: aws.String("secret.txt")}); awsCode(err) != "NoSuchBucket" {
		t.Fatalf("beta reads alpha's object: %v", err)
	}
	if _, err := b.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("private"), Key: aws.String("x"), CopySource: aws.String("private/secret.txt")}); awsCode(err) != "NoSuchBucket" {
		t.Fatalf("beta copies alpha's object: %v", err)
	}
	if _, err := b.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("private")}); err != nil {
		t.Fatalf("beta's own 'private': %v", err)
	}
	lo, err := b.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("private")})
	if err != nil || len(lo.Contents) != 0 {
		t.Fatalf("beta's bucket shows %+v %v", lo, err)
	}

	// Presigned URLs from the AWS SDK: PUT then GET with plain net/http.
	pc := awss3.NewPresignClient(c)
	pput, err := pc.PresignPutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("private"), Key: aws.String("via-url.bin")}, awss3.WithPresignExpires(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(pput.Method, pput.URL, strings.NewReader("presigned body"))
	for k, vs := range pput.SignedHeader {
		if k != "Host" {
			req.Header[k] = vs
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("presigned PUT: %d %s", resp.StatusCode, rb)
	}
	pget, _ := pc.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("private"), Key: aws.String("via-url.bin")})
	resp, err = http.Get(pget.URL)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(rb) != "presigned body" {
		t.Fatalf("presigned GET: %d %q", resp.StatusCode, rb)
	}
	// Expired: signed two hours ago for one minute, by the SDK's own signer.
	u := e.srv.URL + "/private/via-url.bin?X-Amz-Expires=60"
	r0, _ := http.NewRequest("GET", u, nil)
	signed, _, err := v4.NewSigner().PresignHTTP(ctx, aws.Credentials{AccessKeyID: e.alpha.AccessKeyID, SecretAccessKey: e.alpha.SecretAccessKey}, r0, "UNSIGNED-PAYLOAD", "s3", "us-east-1", time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expectXMLError(t, "GET", signed, 403, "AccessDenied", "Request has expired")
	// Tampered: change the expiry.
	expectXMLError(t, "GET", strings.Replace(pget.URL, "X-Amz-Expires=900", "X-Amz-Expires=901", 1), 403, "SignatureDoesNotMatch", "")
	// Anonymous and unsupported.
	expectXMLError(t, "GET", e.srv.URL+"/private/via-url.bin", 403, "AccessDenied", "")
	if _, err := c.GetBucketAcl(ctx, &awss3.GetBucketAclInput{Bucket: aws.String("private")}); awsCode(err) != "NotImplemented" {
		t.Fatalf("acl: %v", err)
	}
}

func expectXMLError(t *testing.T, method, u string, status int, code, msg string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Code, Message, Resource, RequestId string
	}
	data, _ := io.ReadAll(resp.Body)
	if err := xml.Unmarshal(data, &doc); err != nil || resp.StatusCode != status || doc.Code != code || !strings.Contains(doc.Message, msg) || doc.RequestId == "" || doc.Resource == "" {
		t.Fatalf("%s %s: %d %s (%v)", method, u, resp.StatusCode, data, err)
	}
}

func TestRESTCredentialsAndPresign(t *testing.T) {
	e := newEnv(t)
	get := func(tenant, path string, out any) int {
		req, _ := http.NewRequest("GET", e.api.URL+path, nil)
		req.Header.Set("X-Tenant", tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if out != nil && resp.StatusCode == 200 {
			if err := jsonUnmarshal(data, out); err != nil {
				t.Fatalf("%s: %s", path, data)
			}
		}
		return resp.StatusCode
	}
	var cr nimbuss3.Credentials
	if get("alpha", "/api/v1/objects-credentials", &cr) != 200 || cr != e.alpha {
		t.Fatalf("credentials %+v, want the standing pair %+v", cr, e.alpha)
	}
	if get("", "/api/v1/objects-credentials", nil) != 401 {
		t.Fatal("anonymous credentials")
	}
	ctx := context.Background()
	if _, err := e.obj.CreateBucket(ctx, "alpha", "share"); err != nil {
		t.Fatal(err)
	}
	var ps struct{ URL, Method string }
	if code := get("alpha", "/api/v1/objects-presign?bucket=share&key=f%20g.txt&method=PUT&expires=60", &ps); code != 200 || ps.Method != "PUT" {
		t.Fatalf("presign PUT: %d", code)
	}
	req, _ := http.NewRequest("PUT", ps.URL, strings.NewReader("shared"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT via REST-presigned URL: %d", resp.StatusCode)
	}
	if get("alpha", "/api/v1/objects-presign?bucket=share&key=f%20g.txt", &ps) != 200 {
		t.Fatal("presign GET")
	}
	resp, err = http.Get(ps.URL)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(data) != "shared" {
		t.Fatalf("GET via REST-presigned URL: %d %q", resp.StatusCode, data)
	}
	for _, bad := range []string{"bucket=share&key=x&method=DELETE", "bucket=Bad_&key=x", "bucket=share&key=", "bucket=share&key=x&expires=0"} {
		if code := get("alpha", "/api/v1/objects-presign?"+bad, nil); code != 400 {
			t.Fatalf("presign %s: %d", bad, code)
		}
	}
	// Revoked keys stop working and ForTenant issues a fresh one.
	if err := e.creds.Revoke(ctx, e.alpha.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.aws(e.alpha).ListBuckets(ctx, &awss3.ListBucketsInput{}); awsCode(err) != "InvalidAccessKeyId" {
		t.Fatalf("revoked key: %v", err)
	}
	fresh, err := e.creds.ForTenant(ctx, "alpha")
	if err != nil || fresh.AccessKeyID == e.alpha.AccessKeyID {
		t.Fatalf("fresh key %+v %v", fresh, err)
	}
	if lb, err := e.aws(fresh).ListBuckets(ctx, &awss3.ListBucketsInput{}); err != nil || len(lb.Buckets) != 1 {
		t.Fatalf("fresh key lists %+v %v", lb, err)
	}
}

func TestOddKeys(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := e.minio(t, e.alpha)
	c := e.aws(e.alpha)
	if err := mc.MakeBucket(ctx, "odd.keys", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"dir/ü ñ+&=?#.txt", "a//b/./c", "tab\tand%25percent", "日本語/ファイル", "~tilde*star(paren)'quote"}
	for i, k := range keys {
		var err error
		if i%2 == 0 {
			_, err = mc.PutObject(ctx, "odd.keys", k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{})
		} else {
			_, err = c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("odd.keys"), Key: aws.String(k), Body: strings.NewReader(k)})
		}
		if err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	var listed []string
	for oi := range mc.ListObjects(ctx, "odd.keys", minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		listed = append(listed, oi.Key)
	}
	want := append([]string(nil), keys...)
	sort.Strings(want)
	if strings.Join(listed, "|") != strings.Join(want, "|") {
		t.Fatalf("minio lists %q, want %q", listed, want)
	}
	for _, k := range keys {
		g, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("odd.keys"), Key: aws.String(k)})
		if err != nil {
			t.Fatalf("aws get %q: %v", k, err)
		}
		b, _ := io.ReadAll(g.Body)
		g.Body.Close()
		if string(b) != k {
			t.Fatalf("aws get %q: %q", k, b)
		}
		o, err := mc.GetObject(ctx, "odd.keys", k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err = io.ReadAll(o)
		o.Close()
		if err != nil || string(b) != k {
			t.Fatalf("minio get %q: %q %v", k, b, err)
		}
	}
}

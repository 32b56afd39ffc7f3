package s3

import (
	"encoding/xml"
	"errors"
	"net/http"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/objects"
)

const xmlns = "http://s3.amazonaws.com/doc/2006-03-01/"

// Error is an S3 error: one of S3's codes and a message.
type Error struct {
	Code    string
	Message string
	// Status overrides the code's HTTP status.
	Status int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// statuses of the S3 error codes Nimbus answers with.
var statuses = map[string]int{
	"AccessDenied":                      403,
	"AuthorizationHeaderMalformed":      400,
	"AuthorizationQueryParametersError": 400,
	"BadDigest":                         400,
	"BucketAlreadyOwnedByYou":           409,
	"BucketNotEmpty":                    409,
	"EntityTooLarge":                    400,
	"EntityTooSmall":                    400,
	"IncompleteBody":                    400,
	"InternalError":                     500,
	"InvalidAccessKeyId":                403,
	"InvalidArgument":                   400,
	"InvalidDigest":                     400,
	"InvalidBucketName":                 400,
	"InvalidPart":                       400,
	"InvalidPartOrder":                  400,
	"InvalidRange":                      416,
	"InvalidRequest":                    400,
	"KeyTooLongError":                   400,
	"MalformedXML":                      400,
	"MetadataTooLarge":                  400,
	"MethodNotAllowed":                  405,
	"MissingContentLength":              411,
	"MissingSecurityHeader":             400,
	"NoSuchBucket":                      404,
	"NoSuchKey":                         404,
	"NoSuchUpload":                      404,
	"NotImplemented":                    501,
	"PreconditionFailed":                412,
	"RequestTimeTooSkewed":              403,
	"SignatureDoesNotMatch":             403,
	"XAmzContentSHA256Mismatch":         400,
}

func (e *Error) status() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statuses[e.Code]; ok {
		return s
	}
	return 500
}

func s3err(code, msg string) *Error { return &Error{Code: code, Message: msg} }

// toS3 maps a service error onto an S3 error.
func toS3(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	for _, m := range []struct {
		err  error
		code string
	}{
		{objects.ErrNoSuchBucket, "NoSuchBucket"},
		{objects.ErrNoSuchKey, "NoSuchKey"},
		{objects.ErrNoSuchUpload, "NoSuchUpload"},
		{objects.ErrBucketExists, "BucketAlreadyOwnedByYou"},
		{objects.ErrBucketNotEmpty, "BucketNotEmpty"},
		{objects.ErrInvalidBucketName, "InvalidBucketName"},
		{objects.ErrKeyTooLong, "KeyTooLongError"},
		{objects.ErrInvalidKey, "InvalidArgument"},
		{objects.ErrEntityTooLarge, "EntityTooLarge"},
		{objects.ErrEntityTooSmall, "EntityTooSmall"},
		{objects.ErrInvalidPart, "InvalidPart"},
		{objects.ErrInvalidPartOrder, "InvalidPartOrder"},
		{objects.ErrInvalidRange, "InvalidRange"},
		{objects.ErrBadDigest, "BadDigest"},
		{objects.ErrInvalidArgument, "InvalidArgument"},
	} {
		if errors.Is(err, m.err) {
			return s3err(m.code, msg)
		}
	}
	return s3err("InternalError", "we encountered an internal error; please try again")
}

type errorDoc struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource"`
	RequestID string   `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Del("ETag")
	w.WriteHeader(e.status())
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(errorDoc{Code: e.Code, Message: e.Message, Resource: r.URL.Path, RequestID: w.Header().Get("x-amz-request-id")})
}

func writeXML(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(v)
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type owner struct {
	ID          string `xml:"ID"`
	DisplayName string `xml:"DisplayName"`
}

type listAllMyBucketsResult struct {
	XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListAllMyBucketsResult"`
	Owner   owner    `xml:"Owner"`
	Buckets []bucket `xml:"Buckets>Bucket"`
}

type bucket struct {
	Name         string `xml:"Name"`
	CreationDate string `xml:"CreationDate"`
}

type locationConstraint struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LocationConstraint"`
	Location string   `xml:",chardata"`
}

type versioningConfiguration struct {
	XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ VersioningConfiguration"`
}

type object struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
	Owner        *owner `xml:"Owner,omitempty"`
}

type commonPrefix struct {
	Prefix string `xml:"Prefix"`
}

type listBucketResultV2 struct {
	XMLName               xml.Name       `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string         `xml:"Name"`
	Prefix                string         `xml:"Prefix"`
	StartAfter            string         `xml:"StartAfter,omitempty"`
	ContinuationToken     string         `xml:"ContinuationToken,omitempty"`
	NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
	KeyCount              int            `xml:"KeyCount"`
	MaxKeys               int            `xml:"MaxKeys"`
	Delimiter             string         `xml:"Delimiter,omitempty"`
	EncodingType          string         `xml:"EncodingType,omitempty"`
	IsTruncated           bool           `xml:"IsTruncated"`
	Contents              []object       `xml:"Contents"`
	CommonPrefixes        []commonPrefix `xml:"CommonPrefixes"`
}

type listBucketResultV1 struct {
	XMLName        xml.Name       `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name           string         `xml:"Name"`
	Prefix         string         `xml:"Prefix"`
	Marker         string         `xml:"Marker"`
	NextMarker     string         `xml:"NextMarker,omitempty"`
	MaxKeys        int            `xml:"MaxKeys"`
	Delimiter      string         `xml:"Delimiter,omitempty"`
	EncodingType   string         `xml:"EncodingType,omitempty"`
	IsTruncated    bool           `xml:"IsTruncated"`
	Contents       []object       `xml:"Contents"`
	CommonPrefixes []commonPrefix `xml:"CommonPrefixes"`
}

type copyObjectResult struct {
	XMLName      xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CopyObjectResult"`
	LastModified string   `xml:"LastModified"`
	ETag         string   `xml:"ETag"`
}

type deleteRequest struct {
	Quiet   bool `xml:"Quiet"`
	Objects []struct {
		Key string `xml:"Key"`
	} `xml:"Object"`
}

type deletedObject struct {
	Key string `xml:"Key"`
}

type deleteError struct {
	Key     string `xml:"Key"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type deleteResult struct {
	XMLName xml.Name        `xml:"http://s3.amazonaws.com/doc/2006-03-01/ DeleteResult"`
	Deleted []deletedObject `xml:"Deleted"`
	Errors  []deleteError   `xml:"Error"`
}

type initiateMultipartUploadResult struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ InitiateMultipartUploadResult"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	UploadID string   `xml:"UploadId"`
}

type completeMultipartUpload struct {
	Parts []struct {
		PartNumber int    `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

type completeMultipartUploadResult struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CompleteMultipartUploadResult"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
}

type part struct {
	PartNumber   int    `xml:"PartNumber"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
}

type listPartsResult struct {
	XMLName              xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListPartsResult"`
	Bucket               string   `xml:"Bucket"`
	Key                  string   `xml:"Key"`
	UploadID             string   `xml:"UploadId"`
	PartNumberMarker     int      `xml:"PartNumberMarker"`
	NextPartNumberMarker int      `xml:"NextPartNumberMarker"`
	MaxParts             int      `xml:"MaxParts"`
	IsTruncated          bool     `xml:"IsTruncated"`
	StorageClass         string   `xml:"StorageClass"`
	Parts                []part   `xml:"Part"`
}

type upload struct {
	Key          string `xml:"Key"`
	UploadID     string `xml:"UploadId"`
	Initiated    string `xml:"Initiated"`
	StorageClass string `xml:"StorageClass"`
}

type listMultipartUploadsResult struct {
	XMLName            xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListMultipartUploadsResult"`
	Bucket             string   `xml:"Bucket"`
	KeyMarker          string   `xml:"KeyMarker"`
	UploadIDMarker     string   `xml:"UploadIdMarker"`
	NextKeyMarker      string   `xml:"NextKeyMarker"`
	NextUploadIDMarker string   `xml:"NextUploadIdMarker"`
	Prefix             string   `xml:"Prefix"`
	MaxUploads         int      `xml:"MaxUploads"`
	IsTruncated        bool     `xml:"IsTruncated"`
	Uploads            []upload `xml:"Upload"`
}

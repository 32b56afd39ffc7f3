// Command golambda is an unmodified aws-lambda-go function used by the tests:
// HTTP events (API Gateway v2) and raw events through one handler.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// BadInput is the error type the tests expect back as errorType.
type BadInput struct{ What string }

func (e *BadInput) Error() string { return "bad input: " + e.What }

type rawEvent struct {
	Op   string `json:"op"`
	A, B int
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	var probe struct {
		Version  string `json:"version"`
		RouteKey string `json:"routeKey"`
	}
	_ = json.Unmarshal(raw, &probe)
	if probe.Version != "2.0" || probe.RouteKey == "" {
		var ev rawEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, err
		}
		switch ev.Op {
		case "add":
			return map[string]int{"sum": ev.A + ev.B}, nil
		case "fail":
			return nil, &BadInput{What: "op fail"}
		}
		return map[string]any{"echo": json.RawMessage(raw)}, nil
	}
	var req events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	fmt.Printf("handling %s %s\n", req.RequestContext.HTTP.Method, req.RawPath)
	switch req.RawPath {
	case "/fail":
		return nil, &BadInput{What: "path /fail"}
	case "/plain":
		return "just a string", nil
	case "/env":
		dl, _ := ctx.Deadline()
		env := map[string]string{"remaining_ok": fmt.Sprint(time.Until(dl) > 0)}
		for _, k := range []string{"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
			"AWS_REGION", "TZ", "LAMBDA_TASK_ROOT", "_HANDLER", "GREETING", "HOME_SECRET", "AWS_LAMBDA_RUNTIME_API"} {
			env[k] = os.Getenv(k)
		}
		env["request_id"] = lc.AwsRequestID
		env["arn"] = lc.InvokedFunctionArn
		b, _ := json.Marshal(env)
		return events.APIGatewayV2HTTPResponse{StatusCode: 200, Body: string(b), Headers: map[string]string{"Content-Type": "application/json"}}, nil
	case "/binary":
		return events.APIGatewayV2HTTPResponse{StatusCode: 200, IsBase64Encoded: true,
			Body: base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255})}, nil
	}
	body := req.Body
	if req.IsBase64Encoded {
		b, _ := base64.StdEncoding.DecodeString(body)
		body = "b64:" + string(b)
	}
	out, _ := json.Marshal(map[string]any{
		"method":  req.RequestContext.HTTP.Method,
		"path":    req.RawPath,
		"query":   req.QueryStringParameters,
		"rawq":    req.RawQueryString,
		"header":  req.Headers["x-test"],
		"cookies": strings.Join(req.Cookies, "|"),
		"body":    body,
		"id":      lc.AwsRequestID,
		"source":  req.RequestContext.HTTP.SourceIP,
	})
	return events.APIGatewayV2HTTPResponse{
		StatusCode: 201,
		Headers:    map[string]string{"Content-Type": "application/json", "X-Handled-By": "golambda"},
		Cookies:    []string{"a=1", "b=2"},
		Body:       string(out),
	}, nil
}

func main() { lambda.Start(handle) }

// Command lambda-go is an unmodified AWS Lambda function written with
// aws-lambda-go: Nimbus serves it the Lambda Runtime API.
package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	name := req.QueryStringParameters["name"]
	if name == "" {
		name = "world"
	}
	return events.APIGatewayV2HTTPResponse{
		StatusCode: 200,
		Headers:    map[string]string{"Content-Type": "text/plain"},
		Body:       fmt.Sprintf("Hello, %s, from an AWS Lambda Go function on Nimbus (%s %s)\n", name, req.RequestContext.HTTP.Method, req.RawPath),
	}, nil
}

func main() { lambda.Start(handle) }

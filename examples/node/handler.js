// A Nimbus nodejs function: the user ships only this file.
exports.handler = async (event, context) => {
  const name = (event.queryStringParameters || {}).name || "world";
  console.log(`greeting ${name} in ${context.awsRequestId}`);
  return {
    statusCode: 200,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ message: `Hello, ${name}, from Node!`, method: event.requestContext.http.method }),
  };
};

module github.com/nimbusfn/nimbus/sdk/go

go 1.26

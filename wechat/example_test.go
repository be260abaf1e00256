package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// Close an order with API v3 and route the result. The example talks to a
// local sandbox; in production BaseURL is left empty (DefaultBaseURL) and
// the keys come from files (LoadPrivateKeyFile, LoadCertificatesFile).
func Example() {
	sb, err := sandbox.New(sandbox.Options{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	sb.AddOrder(sandbox.Order{OutTradeNo: "1217752501201407033233368018", CreatedAt: time.Now().Add(-10 * time.Minute)})
	creds := sb.Credentials()

	key, err := wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM)
	if err != nil {
		panic(err)
	}
	closer, err := wechat.New(wechat.Config{
		BaseURL:    srv.URL,
		MchID:      creds.MchID,
		PrivateKey: key,
		CertSerial: creds.MerchantCertSerial,
		APIv3Key:   creds.APIv3Key, // download and trust the platform certificates
	})
	if err != nil {
		panic(err)
	}

	out, err := closer.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "1217752501201407033233368018"})
	var werr *wechat.Error
	switch {
	case err == nil:
		fmt.Println("final:", out.Result)
	case errors.As(err, &werr) && werr.Class == wechat.ClassPermanent:
		fmt.Println("needs a person:", werr.Code)
	default:
		fmt.Println("retry later:", wechat.ClassOf(err))
	}

	// Closing again is idempotent: WeChat Pay answers ORDERCLOSED.
	out, err = closer.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "1217752501201407033233368018"})
	fmt.Println(out.Result, out.Code, err)
	// Output:
	// final: closed
	// already_closed ORDERCLOSED <nil>
}

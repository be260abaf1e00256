// Package ids is the one definition of the identifiers wxclose accepts:
// merchant ids (mchid, sub_mchid, sp_mchid), order numbers (out_trade_no,
// transaction_id), app ids (appid, sub_appid) and the v3 key identifiers
// (certificate serial, WeChat Pay public key id). Each rule is a Valid*
// function plus the text that completes an error message naming the field
// ("mchid \"x\" " + MchIDRule), so the producer's payload check, the
// worker's configuration and the WeChat Pay client refuse the same values
// with the same words.
//
// The rules follow WeChat Pay's Close Order pages (shared/seeds): every one
// of these fields is a string of at most 32 characters; merchant ids are
// assigned by WeChat Pay as digits; a merchant's order number may use
// letters, digits and _ - | * @. Being this strict also means an id can be
// put into a URL path, an XML element, an Authorization header or an asynq
// task id ("close:<mchid>:out_trade_no:<n>", which relies on ':' never
// appearing) without escaping surprises.
//
// It depends on nothing, so that tasks (which checkout services import),
// wechat (which must not import tasks) and internal/config can all use it.
package ids

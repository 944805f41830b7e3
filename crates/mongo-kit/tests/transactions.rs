//! Multi-document transactions on the real single-node replica set started by `./dev test`.

use mongo_kit::Mongo;
use mongo_kit::mongodb::Collection;
use mongo_kit::mongodb::bson::{Document, doc};

async fn connect() -> Mongo {
    Mongo::connect(&test_support::mongo("txn"), "transactions-test")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_committed_transaction_keeps_both_writes() {
    let mongo = connect().await;
    let accounts: Collection<Document> = mongo.db().collection("accounts");
    let ledger: Collection<Document> = mongo.db().collection("ledger");

    let mut session = mongo.client().start_session().await.unwrap();
    session
        .start_transaction()
        .and_run2(async |s| {
            accounts
                .insert_one(doc! { "_id": "alice", "points": 10 })
                .session(&mut *s)
                .await?;
            ledger
                .insert_one(doc! { "_id": "grant-1", "user": "alice", "points": 10 })
                .session(&mut *s)
                .await?;
            Ok(())
        })
        .await
        .unwrap();

    assert!(
        accounts
            .find_one(doc! { "_id": "alice" })
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        ledger
            .find_one(doc! { "_id": "grant-1" })
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_failed_transaction_keeps_neither_write() {
    let mongo = connect().await;
    let accounts: Collection<Document> = mongo.db().collection("accounts");
    let ledger: Collection<Document> = mongo.db().collection("ledger");
    ledger.insert_one(doc! { "_id": "grant-1" }).await.unwrap();

    let mut session = mongo.client().start_session().await.unwrap();
    let result = session
        .start_transaction()
        .and_run2(async |s| {
            accounts
                .insert_one(doc! { "_id": "bob", "points": 10 })
                .session(&mut *s)
                .await?;
            // Duplicate key: the second write fails, so the first must not survive either.
            ledger
                .insert_one(doc! { "_id": "grant-1" })
                .session(&mut *s)
                .await?;
            Ok(())
        })
        .await;

    let error = result.expect_err("the duplicate insert fails the transaction");
    assert!(
        error.to_string().contains("E11000"),
        "failed for the planted reason: {error}"
    );
    assert!(
        accounts
            .find_one(doc! { "_id": "bob" })
            .await
            .unwrap()
            .is_none(),
        "the first write was rolled back"
    );
    assert_eq!(ledger.count_documents(doc! {}).await.unwrap(), 1);
}

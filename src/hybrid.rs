//! The 14 "hybrid" RPCs that Milvus 1.1 declares but never serves. Both the
//! node and the proxy answer them with gRPC UNIMPLEMENTED, as a real 1.1
//! server does; this macro writes those trait methods once.

/// Expands, inside an `impl MilvusService for ...` block, to the hybrid RPCs
/// answering `Status::unimplemented`.
#[macro_export]
macro_rules! hybrid_rpcs_unimplemented {
    () => {
        $crate::hybrid_rpcs_unimplemented!(@each
            create_hybrid_collection(Mapping) -> Status,
            has_hybrid_collection(CollectionName) -> BoolReply,
            drop_hybrid_collection(CollectionName) -> Status,
            describe_hybrid_collection(CollectionName) -> Mapping,
            count_hybrid_collection(CollectionName) -> CollectionRowCount,
            show_hybrid_collections(Command) -> MappingList,
            show_hybrid_collection_info(CollectionName) -> CollectionInfo,
            preload_hybrid_collection(CollectionName) -> Status,
            insert_entity(HInsertParam) -> HEntityIDs,
            hybrid_search(HSearchParam) -> TopKQueryResult,
            hybrid_search_in_segments(HSearchInSegmentsParam) -> TopKQueryResult,
            get_entity_by_id(HEntityIdentity) -> HEntity,
            get_entity_i_ds(HGetEntityIDsParam) -> HEntityIDs,
            delete_entities_by_id(HDeleteByIdParam) -> Status,
        );
    };
    (@each $($method:ident($req:ident) -> $resp:ident,)*) => {
        $(
            // Written in `async_trait`'s expanded form: the attribute on the
            // impl block does not see inside a macro invocation.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: tonic::Request<$crate::wire::$req>,
            ) -> ::std::pin::Pin<Box<
                dyn ::std::future::Future<
                    Output = Result<tonic::Response<$crate::wire::$resp>, tonic::Status>,
                > + Send + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    Err(tonic::Status::unimplemented(concat!(
                        stringify!($method),
                        " is a hybrid RPC, which Milvus 1.1 does not implement"
                    )))
                })
            }
        )*
    };
}
